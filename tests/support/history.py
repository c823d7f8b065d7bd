"""Recording client operations for the linearizability checker (tests/support/linearizability.py).

A history is a list of `Operation`s: what a client asked (`input`), when it asked (`call`),
what it was told (`output`) and when (`ret`).  Times are `time.monotonic_ns()` readings by
default, or any monotonic integer clock (a simulation's logical clock).

An operation whose outcome the client never learned (a timeout, a lost connection) is recorded
with `ret = math.inf` and `output = None`: it may have taken effect at any moment after its call,
or never, and the checker accepts both.  An operation the client knows did *not* take effect (the
server refused it before doing anything, e.g. "no leader") is simply dropped with
`HistoryRecorder.discard`.  Any operation still open when the history is read counts as unknown.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, NewType

Handle = NewType("Handle", int)


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation; `ret` is `math.inf` (and `output` None) when the outcome is unknown."""

    client_id: int
    input: Any
    call: float
    output: Any
    ret: float

    @property
    def outcome_unknown(self) -> bool:
        return self.ret == math.inf


@dataclass(slots=True)
class _Open:
    client_id: int
    input: Any
    call: int


class HistoryRecorder:
    """Thread-safe recorder: `invoke` before sending a request, then `ok`, `unknown` or `discard`.

    >>> rec = HistoryRecorder()
    >>> h = rec.invoke(1, "get x")
    >>> rec.ok(h, "value")
    >>> [op.output for op in rec.history()]
    ['value']
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[Handle, _Open] = {}
        self._done: dict[Handle, Operation] = {}
        self._next = 0

    def invoke(self, client_id: int, input: Any) -> Handle:
        """Record the call of an operation; the clock is read under the lock, after any earlier return."""
        with self._lock:
            handle = Handle(self._next)
            self._next += 1
            self._open[handle] = _Open(client_id, input, self._clock())
            return handle

    def ok(self, handle: Handle, output: Any) -> None:
        """Record that the operation completed with `output`."""
        with self._lock:
            op = self._close(handle)
            self._done[handle] = Operation(op.client_id, op.input, op.call, output, self._clock())

    def unknown(self, handle: Handle) -> None:
        """Record that the outcome will never be known: it may or may not have taken effect."""
        with self._lock:
            op = self._close(handle)
            self._done[handle] = Operation(op.client_id, op.input, op.call, None, math.inf)

    def discard(self, handle: Handle) -> None:
        """Forget an operation known not to have taken effect (refused before being applied)."""
        with self._lock:
            self._close(handle)

    def history(self) -> list[Operation]:
        """All recorded operations in invocation order; still-open ones are reported as unknown."""
        with self._lock:
            ops = dict(self._done)
            for handle, op in self._open.items():
                ops[handle] = Operation(op.client_id, op.input, op.call, None, math.inf)
            return [ops[h] for h in sorted(ops)]

    def _close(self, handle: Handle) -> _Open:
        try:
            return self._open.pop(handle)
        except KeyError:
            raise ValueError(f"operation {handle} is not open (never invoked or already closed)") from None


def _input_key(input: Any) -> Hashable:
    key: Hashable = input.key
    return key


def partition_by_key(
    history: Iterable[Operation], key: Callable[[Any], Hashable] = _input_key
) -> list[list[Operation]]:
    """Split a history into independent sub-histories, one per `key(op.input)` (default `input.key`).

    Checking each part on its own is sound when operations on different keys never interact
    (linearizability is compositional, Herlihy & Wing 1990), and it turns one search exponential
    in the number of concurrent operations into many small ones.
    """
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        parts.setdefault(key(op.input), []).append(op)
    return list(parts.values())
