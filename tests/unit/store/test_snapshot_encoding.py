"""Applier.take_snapshot: the pieced encoding of a big v2 node list gives orjson's own bytes."""

from __future__ import annotations

import gc

import orjson
import pytest

import store.apply
from store.apply import Applier
from store.commands import V2Set, V3Put
from store.v3types import PutRequest


def _applier(keys: int) -> Applier:
    a = Applier()
    index = 0
    for i in range(keys):
        index += 1
        # values that look like the placeholder's neighbourhood and other awkward JSON
        value = ["plain", '"nodes-', "ünï\u2028", "\\", ""][i % 5] + str(i)
        a.apply(index, V2Set(f"/1/dir{i % 3}/k{i}", value, False, None, False))
    index += 1
    a.apply(index, V3Put(PutRequest(key=b"k", value=b"nodes")))
    return a


@pytest.mark.parametrize("keys", [0, 1, 7, 50])
@pytest.mark.parametrize("per_call", [1, 3, 1000])
def test_pieced_encoding_is_byte_for_byte_orjson(keys: int, per_call: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.apply, "_ENCODE_NODES_PER_CALL", per_call)
    a = _applier(keys)
    data = a.take_snapshot()()
    # The same state, encoded in one call (what snapshots were before they were pieced).
    whole = orjson.loads(data)
    assert data == orjson.dumps(whole, option=orjson.OPT_SORT_KEYS)
    assert len(whole["v2"]["nodes"]) >= keys
    b = Applier()
    b.restore(data)
    assert b.take_snapshot()() == data


def test_take_snapshot_leaves_the_collector_as_it_found_it() -> None:
    a = _applier(3)
    assert gc.isenabled()
    a.take_snapshot()
    assert gc.isenabled()
    gc.disable()
    try:
        a.take_snapshot()
        assert not gc.isenabled()
    finally:
        gc.enable()
