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
