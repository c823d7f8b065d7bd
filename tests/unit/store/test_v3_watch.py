"""V3Store watchers: start revisions, history replay, compaction, filters, prev_kv, batching."""

from __future__ import annotations

import pytest

from store.errors import V3EmptyWatcherRange
from store.v3.state import V3Store
from store.v3.watch import MvccWatcher
from store.v3types import (
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    RequestOp,
    TxnRequest,
)

PUT, DELETE = EventType.PUT, EventType.DELETE


def watch(
    s: V3Store,
    key: bytes,
    range_end: bytes = b"",
    start: int = 0,
    *,
    prev_kv: bool = False,
    no_put: bool = False,
    no_delete: bool = False,
) -> MvccWatcher:
    return s.watch(key, range_end, start, prev_kv=prev_kv, no_put=no_put, no_delete=no_delete)


def summary(w: MvccWatcher) -> list[tuple[int, list[tuple[EventType, bytes, int]]]]:
    return [(rev, [(e.type, e.kv.key, e.kv.mod_revision) for e in evs]) for rev, evs in w.batches]


def put(s: V3Store, key: bytes, value: bytes = b"v") -> None:
    s.put(PutRequest(key, value))


def delete(s: V3Store, key: bytes, range_end: bytes = b"") -> None:
    s.delete_range(DeleteRangeRequest(key, range_end))


@pytest.fixture
def s() -> V3Store:
    return V3Store()


def test_start_zero_watches_from_the_next_revision(s: V3Store) -> None:
    put(s, b"a")
    w = watch(s, b"a")
    assert not w.batches
    put(s, b"a")
    put(s, b"b")
    assert summary(w) == [(3, [(PUT, b"a", 3)])]


def test_wake_is_called_after_each_batch(s: V3Store) -> None:
    w = watch(s, b"a")
    calls: list[int] = []
    w.wake = lambda: calls.append(len(w.batches))
    put(s, b"a")
    put(s, b"b")
    put(s, b"a")
    assert calls == [1, 2]


def test_past_start_replays_history_at_registration(s: V3Store) -> None:
    put(s, b"a", b"1")  # 2
    put(s, b"b", b"1")  # 3
    put(s, b"a", b"2")  # 4
    delete(s, b"a")  # 5
    w = watch(s, b"a", start=3)
    assert summary(w) == [(4, [(PUT, b"a", 4)]), (5, [(DELETE, b"a", 5)])]
    put(s, b"a", b"3")
    assert summary(w)[-1] == (6, [(PUT, b"a", 6)])


def test_future_start_waits_for_that_revision(s: V3Store) -> None:
    w = watch(s, b"a", start=4)
    put(s, b"a")  # 2
    put(s, b"a")  # 3
    put(s, b"a")  # 4
    assert summary(w) == [(4, [(PUT, b"a", 4)])]


def test_compacted_start_sets_compacted_and_registers_nothing(s: V3Store) -> None:
    for _ in range(4):
        put(s, b"a")  # 2..5
    s.compact(4)
    w = watch(s, b"a", start=3)
    assert w.compacted == 4
    assert not w.active
    put(s, b"a")
    assert not w.batches
    # The compaction revision itself is still watchable.
    w2 = watch(s, b"a", start=4)
    assert w2.compacted == 0
    assert summary(w2) == [(4, [(PUT, b"a", 4)]), (5, [(PUT, b"a", 5)]), (6, [(PUT, b"a", 6)])]


def test_delete_event_kv_has_only_key_and_mod_revision(s: V3Store) -> None:
    w = watch(s, b"a")
    put(s, b"a")
    delete(s, b"a")
    (_, [_]), (_, [ev]) = w.batches
    assert ev == Event(DELETE, KeyValue(b"a", mod_revision=3))


def test_prev_kv_is_attached_except_to_creations(s: V3Store) -> None:
    w = watch(s, b"a", prev_kv=True)
    plain = watch(s, b"a")
    put(s, b"a", b"1")
    put(s, b"a", b"2")
    delete(s, b"a")
    put(s, b"a", b"3")
    (_, [create]), (_, [update]), (_, [dele]), (_, [recreate]) = w.batches
    assert create.prev_kv is None
    assert update.prev_kv == KeyValue(b"a", 2, 2, 1, b"1")
    assert dele.prev_kv == KeyValue(b"a", 2, 3, 2, b"2")
    assert recreate.prev_kv is None
    assert all(e.prev_kv is None for _, evs in plain.batches for e in evs)


def test_prev_kv_in_history_replay(s: V3Store) -> None:
    put(s, b"a", b"1")
    put(s, b"a", b"2")
    delete(s, b"a")
    w = watch(s, b"a", start=1, prev_kv=True)
    prevs = [evs[0].prev_kv for _, evs in w.batches]
    assert prevs == [None, KeyValue(b"a", 2, 2, 1, b"1"), KeyValue(b"a", 2, 3, 2, b"2")]


def test_filters(s: V3Store) -> None:
    no_put = watch(s, b"a", no_put=True)
    no_delete = watch(s, b"a", no_delete=True)
    put(s, b"a")
    delete(s, b"a")
    assert summary(no_put) == [(3, [(DELETE, b"a", 3)])]
    assert summary(no_delete) == [(2, [(PUT, b"a", 2)])]


def test_range_and_prefix_and_from_key_watchers(s: V3Store) -> None:
    prefix = watch(s, b"p/", b"p0")
    from_key = watch(s, b"p/b", b"\0")
    for k in (b"p", b"p/a", b"p/b", b"p0", b"q"):
        put(s, k)
    assert [evs[0].kv.key for _, evs in prefix.batches] == [b"p/a", b"p/b"]
    assert [evs[0].kv.key for _, evs in from_key.batches] == [b"p/b", b"p0", b"q"]


def test_empty_key_means_nul(s: V3Store) -> None:
    everything = watch(s, b"", b"\0")
    put(s, b"a")
    put(s, b"z")
    assert len(everything.batches) == 2


def test_empty_watcher_range_errors(s: V3Store) -> None:
    with pytest.raises(V3EmptyWatcherRange):
        watch(s, b"b", b"a")
    with pytest.raises(V3EmptyWatcherRange):
        watch(s, b"b", b"b")


def test_a_txn_is_one_batch_in_txn_order(s: V3Store) -> None:
    put(s, b"k2")
    w = watch(s, b"k", b"l")
    s.txn(
        TxnRequest(
            success=(
                RequestOp(request_put=PutRequest(b"k3")),
                RequestOp(request_delete_range=DeleteRangeRequest(b"k2")),
                RequestOp(request_put=PutRequest(b"x")),
                RequestOp(request_put=PutRequest(b"k1")),
            )
        )
    )
    assert summary(w) == [(3, [(PUT, b"k3", 3), (DELETE, b"k2", 3), (PUT, b"k1", 3)])]


def test_history_replay_batches_a_txn_together(s: V3Store) -> None:
    s.txn(
        TxnRequest(success=(RequestOp(request_put=PutRequest(b"a")), RequestOp(request_put=PutRequest(b"b"))))
    )
    w = watch(s, b"\0", b"\0", start=1)
    assert summary(w) == [(2, [(PUT, b"a", 2), (PUT, b"b", 2)])]


def test_cancel_is_idempotent_and_stops_events(s: V3Store) -> None:
    w = watch(s, b"a")
    r = watch(s, b"a", b"b")
    w.cancel()
    w.cancel()
    r.cancel()
    put(s, b"a")
    assert not w.batches and not r.batches
    assert len(s.watchers) == 0


def test_cancel_from_wake_does_not_disturb_delivery(s: V3Store) -> None:
    w1 = watch(s, b"a")
    w2 = watch(s, b"a")
    w1.wake = w2.cancel
    w2.wake = w1.cancel
    put(s, b"a")
    assert len(w1.batches) + len(w2.batches) >= 1


def test_events_are_never_duplicated_across_replay_and_live(s: V3Store) -> None:
    for i in range(5):
        put(s, b"a", bytes([i]))
    w = watch(s, b"a", start=2)
    for i in range(3):
        put(s, b"a", bytes([i]))
    revs = [rev for rev, _ in w.batches]
    assert revs == list(range(2, 10))
