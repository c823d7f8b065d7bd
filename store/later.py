"""A result still to come, delivered without the event loop.

The fast write paths (v2api/keys.py, v3gateway/kv.py and routes.py) hand one of these to the
HTTP server instead of an asyncio.Future: the same done/result/exception/add_done_callback
interface, but its one callback runs at once, inside set_result's caller (the apply loop),
rather than being scheduled for the loop's next turn. That hop cost ~2-4 us per write here
(one per Future; a v3 put had two), and the answer now leaves one turn sooner.
Must not import asyncio (store's rule): tests wait for one through a Future of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class NotSettled(RuntimeError):
    """result() or exception() before the result, or a second set_result()."""


class Later(Generic[T]):
    __slots__ = ("_callback", "_done", "_exception", "_result")

    def __init__(self) -> None:
        self._callback: Callable[[Later[T]], object] | None = None
        self._done = False
        self._result: T | None = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False  # nothing cancels an answer: the server notices a client that left

    def exception(self) -> BaseException | None:
        if not self._done:
            raise NotSettled("no result yet")
        return self._exception

    def result(self) -> T:
        if not self._done:
            raise NotSettled("no result yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]  # what set_result gave

    def add_done_callback(self, fn: Callable[[Later[T]], object]) -> None:
        """Call fn(self) once settled (at once if it is); one callback at most."""
        if self._callback is not None:
            raise RuntimeError("a Later has one consumer")
        if self._done:
            fn(self)
        else:
            self._callback = fn

    def set_result(self, result: T) -> None:
        self._settle(result, None)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(None, exc)

    def _settle(self, result: T | None, exc: BaseException | None) -> None:
        if self._done:
            raise NotSettled("settled already")
        self._done = True
        self._result, self._exception = result, exc
        fn, self._callback = self._callback, None
        if fn is not None:
            fn(self)
