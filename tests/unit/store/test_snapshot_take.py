"""Applier.take_snapshot copies the state with the cyclic collector off, and restores its state."""

from __future__ import annotations

import gc

import orjson
import pytest

import store.jsonstream
from store.apply import Applier
from store.commands import V2Set


def test_take_snapshot_leaves_the_collector_as_it_found_it() -> None:
    a = Applier()
    for i in range(3):
        a.apply(i + 1, V2Set(f"/1/k{i}", "v", False, None, False))
    assert gc.isenabled()
    data = b"".join(a.take_snapshot()())
    assert gc.isenabled()
    gc.disable()
    try:
        assert b"".join(a.take_snapshot()()) == data
        assert not gc.isenabled()
    finally:
        gc.enable()
    b = Applier()
    b.restore(data)
    assert b"".join(b.take_snapshot()()) == data


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
    assert b"".join(encode()) == b"".join(expected.take_snapshot()())
    assert b"".join(a.take_snapshot()()) != b"".join(expected.take_snapshot()())


def test_a_snapshot_in_pieces_is_byte_for_byte_the_whole_state_encoded_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pieces change nothing on disk: what older versions wrote and read, and what a peer
    is sent, is orjson.dumps of the whole state with sorted keys."""
    from store.commands import Command, V2Create, V3Alarm, V3Compact, V3DeleteRange, V3LeaseGrant, V3Put
    from store.v3types import DeleteRangeRequest, PutRequest

    monkeypatch.setattr(store.jsonstream, "SLICE_ITEMS", 4)
    cmds: list[Command] = [
        V2Set("/dir", "", True, None, False),
        V2Set("/dir/_hidden", "h", False, None, False),
        V2Set("/dir/ttl", "t", False, 2_000_000_000_000_000_000, False),
        V2Set('/ünïcode/"q"', "välue\n", False, None, False),
        V2Create("/queue", "in-order", False, True, None),
        V3LeaseGrant(7, 60),
        V3Put(PutRequest(key=b"k\x00\xff", value=b"\x01" * 300, lease=7)),
        V3Put(PutRequest(key=b"k2", value=b"v2")),
        V3Put(PutRequest(key=b"k2", value=b"v2b")),
        V3DeleteRange(DeleteRangeRequest(key=b"k2")),
        V3Compact(3),
        V3Alarm(1, 5, 1),
    ]
    cmds += [V2Set(f"/many/k{i}", str(i), False, None, False) for i in range(10)]
    a = Applier()
    for i, cmd in enumerate(cmds, start=1):
        a.apply(i, cmd)
    pieces = [bytes(p) for p in a.take_snapshot()()]
    state = {
        "format": 1,
        "applied_index": len(cmds),
        "v2": a.v2.to_obj(),
        "alarms": sorted(a.alarms),
        "v3": a.v3.to_obj(),
    }
    assert b"".join(pieces) == orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    assert len(pieces) > 10  # the node and record arrays came a slice at a time
    b = Applier()
    b.restore(b"".join(pieces))
    assert b.snapshot() == a.snapshot()
