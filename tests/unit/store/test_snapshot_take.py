"""Applier.take_snapshot copies the state with the cyclic collector off, and restores its state."""

from __future__ import annotations

import gc

from store.apply import Applier
from store.commands import V2Set


def test_take_snapshot_leaves_the_collector_as_it_found_it() -> None:
    a = Applier()
    for i in range(3):
        a.apply(i + 1, V2Set(f"/1/k{i}", "v", False, None, False))
    assert gc.isenabled()
    data = a.take_snapshot()()
    assert gc.isenabled()
    gc.disable()
    try:
        assert a.take_snapshot()() == data
        assert not gc.isenabled()
    finally:
        gc.enable()
    b = Applier()
    b.restore(data)
    assert b.take_snapshot()() == data


def test_a_snapshot_is_the_state_when_taken_whatever_is_applied_before_it_is_encoded() -> None:
    from store.commands import Command, V3Compact, V3DeleteRange, V3Put
    from store.v3types import DeleteRangeRequest, PutRequest

    first: list[Command] = [
        V2Set("/1/a", "1", False, None, False),
        V3Put(PutRequest(key=b"k1", value=b"v1")),
        V3Put(PutRequest(key=b"k2", value=b"v2")),
        V3Put(PutRequest(key=b"k1", value=b"v1b")),
    ]
    later: list[Command] = [
        V3Put(PutRequest(key=b"k1", value=b"v1c")),
        V3DeleteRange(DeleteRangeRequest(key=b"k2")),
        V3Compact(4),
        V2Set("/1/a", "2", False, None, False),
    ]
    a, expected = Applier(), Applier()
    for i, cmd in enumerate(first, start=1):
        a.apply(i, cmd)
        expected.apply(i, cmd)
    encode = a.take_snapshot()  # copied now, encoded below
    for i, cmd in enumerate(later, start=len(first) + 1):
        a.apply(i, cmd)
    assert encode() == expected.take_snapshot()()
    assert a.take_snapshot()() != expected.take_snapshot()()
