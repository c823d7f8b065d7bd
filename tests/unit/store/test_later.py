"""store.later.Later: the fast write paths' answer to come (asyncio.Future's interface, but the
callback runs inside set_result)."""

from __future__ import annotations

import pytest

from store.later import Later, NotSettled


def test_the_callback_runs_inside_set_result() -> None:
    later: Later[int] = Later()
    seen: list[int] = []
    later.add_done_callback(lambda lt: seen.append(lt.result()))
    assert not later.done() and seen == []
    later.set_result(7)
    assert seen == [7] and later.done() and later.exception() is None and not later.cancelled()


def test_a_callback_added_once_settled_runs_at_once() -> None:
    later: Later[str] = Later()
    later.set_result("x")
    seen: list[str] = []
    later.add_done_callback(lambda lt: seen.append(lt.result()))
    assert seen == ["x"]


def test_an_exception_is_raised_by_result() -> None:
    later: Later[int] = Later()
    boom = ValueError("boom")
    later.set_exception(boom)
    assert later.exception() is boom
    with pytest.raises(ValueError, match="boom"):
        later.result()


def test_unsettled_and_twice_settled_are_errors() -> None:
    later: Later[int] = Later()
    with pytest.raises(NotSettled):
        later.result()
    with pytest.raises(NotSettled):
        later.exception()
    later.set_result(1)
    with pytest.raises(NotSettled):
        later.set_result(2)
    with pytest.raises(NotSettled):
        later.set_exception(ValueError())
    assert later.result() == 1


def test_one_consumer_only() -> None:
    later: Later[int] = Later()
    later.add_done_callback(lambda _: None)
    with pytest.raises(RuntimeError):
        later.add_done_callback(lambda _: None)
