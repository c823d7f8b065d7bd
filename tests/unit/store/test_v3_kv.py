"""V3Store KV rules: revisions, range_end, time travel, range options, put flags, delete,
compaction, hash and size. Expected values were checked against etcd 3.4.23 where noted."""

from __future__ import annotations

import pytest

from store.errors import V3Compacted, V3FutureRevision, V3KeyNotFound, V3LeaseNotFound
from store.v3.state import V3Store
from store.v3types import (
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
)


def put(s: V3Store, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    return s.put(PutRequest(key, value, lease)).revision


def keys(s: V3Store, key: bytes, range_end: bytes = b"", **kw: int | bool) -> list[bytes]:
    return [kv.key for kv in s.range(RangeRequest(key, range_end, **kw)).kvs]  # type: ignore[arg-type]


def get(s: V3Store, key: bytes, revision: int = 0) -> KeyValue | None:
    kvs = s.range(RangeRequest(key, revision=revision)).kvs
    return kvs[0] if kvs else None


@pytest.fixture
def s() -> V3Store:
    return V3Store()


# ---- revisions -------------------------------------------------------------------------------


def test_empty_store_is_at_revision_one(s: V3Store) -> None:
    assert s.current_revision == 1
    assert s.compact_revision == 0
    r = s.range(RangeRequest(b"a"))
    assert (r.revision, r.kvs, r.count, r.more) == (1, (), 0, False)


def test_every_put_makes_one_revision_even_with_an_identical_value(s: V3Store) -> None:
    assert put(s, b"a", b"1") == 2
    assert put(s, b"a", b"1") == 3
    assert put(s, b"b") == 4
    assert s.current_revision == 4


def test_key_fields_follow_create_mod_version(s: V3Store) -> None:
    put(s, b"a", b"1")
    put(s, b"a", b"2")
    put(s, b"a", b"3")
    assert get(s, b"a") == KeyValue(b"a", create_revision=2, mod_revision=4, version=3, value=b"3")


def test_delete_resets_version_and_create_revision(s: V3Store) -> None:
    put(s, b"a")
    put(s, b"a")
    assert s.delete_range(DeleteRangeRequest(b"a")).revision == 4
    put(s, b"a", b"again")
    assert get(s, b"a") == KeyValue(b"a", create_revision=5, mod_revision=5, version=1, value=b"again")


def test_deleting_nothing_makes_no_revision(s: V3Store) -> None:
    put(s, b"a")
    r = s.delete_range(DeleteRangeRequest(b"zz"))
    assert (r.revision, r.deleted, r.prev_kvs) == (2, 0, ())
    assert s.current_revision == 2


def test_delete_range_counts_and_returns_prev_kvs_only_when_asked(s: V3Store) -> None:
    for k in (b"a1", b"a2", b"b"):
        put(s, k, k)
    r = s.delete_range(DeleteRangeRequest(b"a", b"b"))
    assert (r.revision, r.deleted, r.prev_kvs) == (5, 2, ())
    put(s, b"c", b"c")
    r = s.delete_range(DeleteRangeRequest(b"\0", b"\0", prev_kv=True))
    assert r.deleted == 2
    assert [kv.key for kv in r.prev_kvs] == [b"b", b"c"]
    assert r.prev_kvs[0] == KeyValue(b"b", 4, 4, 1, b"b")
    assert s.current_revision == 7


# ---- range_end rules -------------------------------------------------------------------------


@pytest.fixture
def abc(s: V3Store) -> V3Store:
    for k in (b"a", b"a/1", b"a/2", b"a0", b"b", b"c"):
        put(s, k)
    return s


def test_empty_range_end_is_a_single_key(abc: V3Store) -> None:
    assert keys(abc, b"a") == [b"a"]
    assert keys(abc, b"zz") == []


def test_nul_range_end_means_every_key_from_key(abc: V3Store) -> None:
    assert keys(abc, b"a0", b"\0") == [b"a0", b"b", b"c"]


def test_nul_key_and_nul_range_end_means_everything(abc: V3Store) -> None:
    assert keys(abc, b"\0", b"\0") == [b"a", b"a/1", b"a/2", b"a0", b"b", b"c"]


def test_prefix_is_key_to_key_plus_one(abc: V3Store) -> None:
    assert keys(abc, b"a/", b"a0") == [b"a/1", b"a/2"]


@pytest.mark.parametrize("range_end", [b"a", b"A", b"a/"])
def test_range_end_not_after_key_is_nothing(abc: V3Store, range_end: bytes) -> None:
    # etcd 3.4.23: {"key":"p3","range_end":"p2"} → {} (no error).
    r = abc.range(RangeRequest(b"a/", range_end))
    assert (r.kvs, r.count) == ((), 0)


# ---- time travel -----------------------------------------------------------------------------


def test_range_at_an_old_revision_sees_that_state_but_answers_current_revision(s: V3Store) -> None:
    put(s, b"a", b"1")  # 2
    put(s, b"b", b"1")  # 3
    put(s, b"a", b"2")  # 4
    s.delete_range(DeleteRangeRequest(b"b"))  # 5
    put(s, b"b", b"3")  # 6
    at = {
        rev: [(kv.key, kv.value) for kv in s.range(RangeRequest(b"\0", b"\0", revision=rev)).kvs]
        for rev in range(1, 7)
    }
    assert at == {
        1: [],
        2: [(b"a", b"1")],
        3: [(b"a", b"1"), (b"b", b"1")],
        4: [(b"a", b"2"), (b"b", b"1")],
        5: [(b"a", b"2")],
        6: [(b"a", b"2"), (b"b", b"3")],
    }
    assert s.range(RangeRequest(b"a", revision=2)).revision == 6
    assert get(s, b"b", 3) == KeyValue(b"b", 3, 3, 1, b"1")
    assert get(s, b"b", 6) == KeyValue(b"b", 6, 6, 1, b"3")


def test_range_at_a_future_revision_errors(s: V3Store) -> None:
    put(s, b"a")
    with pytest.raises(V3FutureRevision):
        s.range(RangeRequest(b"a", revision=3))


def test_negative_range_revision_means_current(s: V3Store) -> None:
    # etcd 3.4.23: kv/range revision -3 answers the current value, also after a compaction.
    put(s, b"a", b"1")
    put(s, b"a", b"2")
    s.compact(2)
    assert get(s, b"a", -3) == KeyValue(b"a", 2, 3, 2, b"2")


# ---- range options ---------------------------------------------------------------------------


@pytest.fixture
def pkeys(s: V3Store) -> V3Store:
    # The etcd 3.4.23 session: p1 v3, p2 v1, p3 v2, p4 v1, p5 v2 (revisions 2..10).
    for k in (b"p1", b"p1", b"p1", b"p2", b"p3", b"p3", b"p4", b"p5", b"p5"):
        put(s, k, b"v" + k)
    put(s, b"q", b"outside")
    return s


def test_limit_sets_more_and_count_is_the_whole_range(pkeys: V3Store) -> None:
    r = pkeys.range(RangeRequest(b"p", b"q", limit=2))
    assert [kv.key for kv in r.kvs] == [b"p1", b"p2"]
    assert (r.more, r.count) == (True, 5)
    r = pkeys.range(RangeRequest(b"p", b"q", limit=5))
    assert (len(r.kvs), r.more, r.count) == (5, False, 5)


def test_negative_limit_means_no_limit(pkeys: V3Store) -> None:
    r = pkeys.range(RangeRequest(b"p", b"q", limit=-1))
    assert (len(r.kvs), r.more) == (5, False)


def test_count_only_has_no_kvs_and_no_more(pkeys: V3Store) -> None:
    r = pkeys.range(RangeRequest(b"p", b"q", limit=2, count_only=True))
    assert (r.kvs, r.more, r.count) == ((), False, 5)


def test_keys_only_strips_values(pkeys: V3Store) -> None:
    r = pkeys.range(RangeRequest(b"p1", keys_only=True))
    assert r.kvs == (KeyValue(b"p1", 2, 4, 3, b""),)


def test_sort_target_without_order_sorts_ascending_after_a_limited_fetch(pkeys: V3Store) -> None:
    # etcd 3.4.23: the limit+1 fetch happens (order is NONE), then the ascending sort:
    # p1 p2 p3 fetched → p2 (v1), p3 (v2); p4 (v1) is never seen.
    r = pkeys.range(RangeRequest(b"p", b"q", limit=2, sort_target=SortTarget.VERSION))
    assert [kv.key for kv in r.kvs] == [b"p2", b"p3"]
    assert (r.more, r.count) == (True, 5)


def test_sort_descend_by_version_keeps_key_order_among_ties(pkeys: V3Store) -> None:
    # etcd 3.4.23: p1 p3 p5 p2 p4.
    got = keys(pkeys, b"p", b"q", sort_order=SortOrder.DESCEND, sort_target=SortTarget.VERSION)
    assert got == [b"p1", b"p3", b"p5", b"p2", b"p4"]
    got = keys(pkeys, b"p", b"q", limit=2, sort_order=SortOrder.DESCEND, sort_target=SortTarget.VERSION)
    assert got == [b"p1", b"p3"]


def test_sort_descend_by_key_reverses(pkeys: V3Store) -> None:
    assert keys(pkeys, b"p3", b"\0", sort_order=SortOrder.DESCEND) == [b"q", b"p5", b"p4", b"p3"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (SortTarget.KEY, [b"p1", b"p2", b"p3", b"p4", b"p5"]),
        (SortTarget.VERSION, [b"p2", b"p4", b"p3", b"p5", b"p1"]),
        (SortTarget.CREATE, [b"p1", b"p2", b"p3", b"p4", b"p5"]),
        (SortTarget.MOD, [b"p1", b"p2", b"p3", b"p4", b"p5"]),
        (SortTarget.VALUE, [b"p1", b"p2", b"p3", b"p4", b"p5"]),
    ],
)
def test_sort_ascend_by_each_target(pkeys: V3Store, target: SortTarget, expected: list[bytes]) -> None:
    assert keys(pkeys, b"p", b"q", sort_order=SortOrder.ASCEND, sort_target=target) == expected


def test_sort_by_value_descending(s: V3Store) -> None:
    put(s, b"a", b"2")
    put(s, b"b", b"3")
    put(s, b"c", b"1")
    assert keys(s, b"a", b"d", sort_order=SortOrder.DESCEND, sort_target=SortTarget.VALUE) == [
        b"b",
        b"a",
        b"c",
    ]


def test_filters_apply_after_count_and_before_limit(pkeys: V3Store) -> None:
    # etcd 3.4.23 (same keys, its revisions shifted by 4): the min_mod_revision that drops p1
    # with limit 2 → p2 p3, more, count 5 (count ignores the filter).
    r = pkeys.range(RangeRequest(b"p", b"q", limit=2, min_mod_revision=5, keys_only=True))
    assert [kv.key for kv in r.kvs] == [b"p2", b"p3"]
    assert (r.more, r.count) == (True, 5)


def test_each_filter_bound(pkeys: V3Store) -> None:
    # mod: p1 4, p2 5, p3 7, p4 8, p5 10; create: p1 2, p2 5, p3 6, p4 8, p5 9.
    assert keys(pkeys, b"p", b"q", max_mod_revision=7) == [b"p1", b"p2", b"p3"]
    assert keys(pkeys, b"p", b"q", min_mod_revision=7) == [b"p3", b"p4", b"p5"]
    assert keys(pkeys, b"p", b"q", max_create_revision=5) == [b"p1", b"p2"]
    assert keys(pkeys, b"p", b"q", min_create_revision=6, max_create_revision=8) == [b"p3", b"p4"]


# ---- put flags -------------------------------------------------------------------------------


def test_put_prev_kv_only_when_asked_and_the_key_existed(s: V3Store) -> None:
    assert s.put(PutRequest(b"a", b"1", prev_kv=True)).prev_kv is None
    assert s.put(PutRequest(b"a", b"2")).prev_kv is None
    assert s.put(PutRequest(b"a", b"3", prev_kv=True)).prev_kv == KeyValue(b"a", 2, 3, 2, b"2")


def test_ignore_value_keeps_the_value_and_ignore_lease_keeps_the_lease(s: V3Store) -> None:
    s.lease_grant(7, 60)
    put(s, b"a", b"old", lease=7)
    s.put(PutRequest(b"a", ignore_value=True, ignore_lease=True))
    assert get(s, b"a") == KeyValue(b"a", 2, 3, 2, b"old", 7)
    s.put(PutRequest(b"a", b"new", ignore_lease=True))
    assert get(s, b"a") == KeyValue(b"a", 2, 4, 3, b"new", 7)
    s.put(PutRequest(b"a", ignore_value=True))  # no lease: detached
    assert get(s, b"a") == KeyValue(b"a", 2, 5, 4, b"new", 0)


@pytest.mark.parametrize(
    "req", [PutRequest(b"a", ignore_value=True), PutRequest(b"a", b"x", ignore_lease=True)]
)
def test_ignore_flags_on_a_missing_key_error_without_a_revision(s: V3Store, req: PutRequest) -> None:
    with pytest.raises(V3KeyNotFound):
        s.put(req)
    put(s, b"a")
    s.delete_range(DeleteRangeRequest(b"a"))
    with pytest.raises(V3KeyNotFound):
        s.put(req)
    assert s.current_revision == 3


def test_put_with_an_unknown_lease_errors_before_the_key_check(s: V3Store) -> None:
    with pytest.raises(V3LeaseNotFound):
        s.put(PutRequest(b"a", lease=5, ignore_value=True))
    assert s.current_revision == 1


# ---- compaction ------------------------------------------------------------------------------


def test_compaction_keeps_the_compacted_revision_readable(s: V3Store) -> None:
    for v in (b"1", b"2", b"3"):
        put(s, b"a", v)  # 2 3 4
    s.compact(3)
    assert s.compact_revision == 3
    assert get(s, b"a", 3) == KeyValue(b"a", 2, 3, 2, b"2")
    assert get(s, b"a", 4) == KeyValue(b"a", 2, 4, 3, b"3")
    with pytest.raises(V3Compacted):
        s.range(RangeRequest(b"a", revision=2))


def test_compaction_errors(s: V3Store) -> None:
    put(s, b"a")
    put(s, b"a")  # 3
    with pytest.raises(V3FutureRevision):
        s.compact(4)
    s.compact(2)
    for rev in (2, 1, 0, -1):
        with pytest.raises(V3Compacted):
            s.compact(rev)
    s.compact(3)
    assert s.compact_revision == 3


def test_compaction_at_zero_is_allowed_once(s: V3Store) -> None:
    # etcd 3.4.23: compactMainRev starts at -1, so compaction at 0 succeeds once, then errors.
    s.compact(0)
    assert s.compact_revision == 0
    with pytest.raises(V3Compacted):
        s.compact(0)


def test_compaction_removes_old_versions_physically(s: V3Store) -> None:
    for i in range(50):
        put(s, b"a", str(i).encode())
        put(s, b"gone")
        s.delete_range(DeleteRangeRequest(b"gone"))
    before = len(s.kv._records)
    s.compact(s.current_revision)
    # Only the live key's latest record survives; the deleted key leaves no trace at all.
    assert [rec.kv for _, rec in s.kv._records.items()] == [get(s, b"a")]
    assert len(s.kv._records) == 1 < before
    assert len(s.kv.index) == 1
    assert s.db_size_in_use() < s.db_size()


def test_compaction_keeps_everything_newer(s: V3Store) -> None:
    put(s, b"a", b"1")  # 2
    s.delete_range(DeleteRangeRequest(b"a"))  # 3
    put(s, b"a", b"2")  # 4
    put(s, b"b", b"1")  # 5
    s.compact(3)
    assert get(s, b"a", 3) is None
    assert get(s, b"a", 4) == KeyValue(b"a", 4, 4, 1, b"2")
    assert [kv.key for kv in s.range(RangeRequest(b"\0", b"\0", revision=5)).kvs] == [b"a", b"b"]


def test_compaction_then_put_continues_versions(s: V3Store) -> None:
    put(s, b"a")
    put(s, b"a")
    put(s, b"a")  # version 3 at rev 4
    s.compact(4)
    put(s, b"a")
    assert get(s, b"a") == KeyValue(b"a", 2, 5, 4, b"v")


# ---- hash and size ---------------------------------------------------------------------------


def test_hash_is_deterministic_and_changes_with_state() -> None:
    a, b = V3Store(), V3Store()
    assert a.hash() == b.hash()
    put(a, b"k", b"1")
    assert a.hash() != b.hash()
    put(b, b"k", b"1")
    assert a.hash() == b.hash()
    assert 0 <= a.hash() < 2**32


def test_db_size_grows_with_data_and_shrinks_only_by_defragment(s: V3Store) -> None:
    empty = s.db_size()
    assert empty == 24576 and s.db_size_in_use() == 16384  # fresh etcd 3.4.23 status
    for i in range(10):
        put(s, b"k", bytes(1000) + bytes([i]))
    grown = s.db_size()
    assert grown > empty + 10_000
    s.compact(s.current_revision)
    assert s.db_size() == grown
    s.defragment()
    assert empty < s.db_size() < grown


def test_the_revision_log_keeps_revisions_in_order_and_refuses_going_back() -> None:
    from store.v3.kv import Record, RevisionLog

    log = RevisionLog()
    recs = {rev: Record(KeyValue(b"k%d%d" % rev, mod_revision=rev[0]), False) for rev in [(2, 0), (2, 1), (3, 0), (5, 0)]}
    for rev, rec in recs.items():
        log.add(rev, rec)
    with pytest.raises(ValueError):
        log.add((5, 0), recs[(2, 0)])
    with pytest.raises(ValueError):
        log.add((4, 9), recs[(2, 0)])
    assert list(log) == list(recs) and list(log.items()) == list(recs.items()) and len(log) == 4
    assert log.since(3) == [(3, 0), (5, 0)] and log.since(6) == [] and log.since(0) == list(recs)
    assert log.through(2) == [(2, 0), (2, 1)] and log.through(4) == [(2, 0), (2, 1), (3, 0)]
    freed = log.drop([(2, 1), (3, 0)])
    assert freed == recs[(2, 1)].size() + recs[(3, 0)].size()
    assert list(log) == [(2, 0), (5, 0)] and log[(5, 0)] is recs[(5, 0)]
    log.add((6, 0), recs[(2, 0)])
    assert log.through(9) == [(2, 0), (5, 0), (6, 0)]
