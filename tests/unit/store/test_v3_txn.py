"""V3Store txn: compares, branches, nested txns, one revision, checks before writes.
Cases marked "etcd 3.4.23" were run against the real server."""

from __future__ import annotations

import pytest

from store.errors import V3Compacted, V3FutureRevision, V3KeyNotFound, V3LeaseNotFound
from store.v3.state import V3Store
from store.v3types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)

EQ, GT, LT, NE = CompareResult.EQUAL, CompareResult.GREATER, CompareResult.LESS, CompareResult.NOT_EQUAL


def op_put(key: bytes, value: bytes = b"v", **kw: int | bool) -> RequestOp:
    return RequestOp(request_put=PutRequest(key, value, **kw))  # type: ignore[arg-type]


def op_get(key: bytes, range_end: bytes = b"", revision: int = 0) -> RequestOp:
    return RequestOp(request_range=RangeRequest(key, range_end, revision=revision))


def op_del(key: bytes, range_end: bytes = b"", prev_kv: bool = False) -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key, range_end, prev_kv))


def op_txn(
    *compare: Compare, success: tuple[RequestOp, ...] = (), failure: tuple[RequestOp, ...] = ()
) -> RequestOp:
    return RequestOp(request_txn=TxnRequest(compare, success, failure))


def value(s: V3Store, key: bytes) -> bytes | None:
    kvs = s.range(RangeRequest(key)).kvs
    return kvs[0].value if kvs else None


@pytest.fixture
def s() -> V3Store:
    st = V3Store()
    st.put(PutRequest(b"a", b"1"))  # 2
    st.put(PutRequest(b"a", b"2"))  # 3, version 2
    st.put(PutRequest(b"b", b"x"))  # 4
    return st


def check(s: V3Store, c: Compare) -> bool:
    return s.txn(TxnRequest(compare=(c,))).succeeded


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (Compare(EQ, CompareTarget.VERSION, b"a", version=2), True),
        (Compare(GT, CompareTarget.VERSION, b"a", version=1), True),
        (Compare(LT, CompareTarget.VERSION, b"a", version=2), False),
        (Compare(NE, CompareTarget.VERSION, b"a", version=2), False),
        (Compare(EQ, CompareTarget.CREATE, b"a", create_revision=2), True),
        (Compare(EQ, CompareTarget.MOD, b"a", mod_revision=3), True),
        (Compare(LT, CompareTarget.MOD, b"a", mod_revision=4), True),
        (Compare(EQ, CompareTarget.VALUE, b"a", value=b"2"), True),
        (Compare(GT, CompareTarget.VALUE, b"a", value=b"10"), True),  # byte-wise
        (Compare(EQ, CompareTarget.LEASE, b"a", lease=0), True),
        # A missing key compares as zeros...
        (Compare(EQ, CompareTarget.VERSION, b"zz"), True),
        (Compare(EQ, CompareTarget.CREATE, b"zz", create_revision=0), True),
        (Compare(EQ, CompareTarget.LEASE, b"zz", lease=0), True),
        # ...except VALUE, which is always false on a missing key (etcd 3.4.23).
        (Compare(NE, CompareTarget.VALUE, b"zz", value=b"x"), False),
        (Compare(EQ, CompareTarget.VALUE, b"zz", value=b""), False),
        # With a range, every key must match (etcd 3.4.23).
        (Compare(GT, CompareTarget.VERSION, b"a", b"c", version=0), True),
        (Compare(GT, CompareTarget.VERSION, b"a", b"c", version=1), False),
        (Compare(GT, CompareTarget.VERSION, b"\0", b"\0", version=0), True),
        (Compare(EQ, CompareTarget.VERSION, b"x", b"z", version=0), True),  # empty range
        (Compare(EQ, CompareTarget.VALUE, b"x", b"z", value=b""), False),
        # A union member other than the target's is ignored: the target compares against 0.
        (Compare(EQ, CompareTarget.MOD, b"a", version=3), False),
    ],
)
def test_compare(s: V3Store, c: Compare, expected: bool) -> None:
    assert check(s, c) is expected


def test_no_compares_take_success(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_get(b"a"),), failure=(op_put(b"f"),)))
    assert r.succeeded
    assert s.current_revision == 4


def test_read_only_txn_answers_current_revision(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_get(b"a"), op_get(b"b"))))
    assert r.revision == 4
    assert r.responses[0].response_range is not None
    assert r.responses[0].response_range.revision == 4
    assert s.current_revision == 4


def test_failure_branch_runs_when_a_compare_fails(s: V3Store) -> None:
    r = s.txn(
        TxnRequest(
            compare=(Compare(EQ, CompareTarget.VALUE, b"a", value=b"nope"),),
            success=(op_put(b"s"),),
            failure=(op_put(b"f"),),
        )
    )
    assert not r.succeeded
    assert value(s, b"f") == b"v" and value(s, b"s") is None


def test_all_writes_share_one_revision_and_reads_see_earlier_writes(s: V3Store) -> None:
    # etcd 3.4.23: put b, range b, delete z (nothing) → all headers at the new revision.
    r = s.txn(
        TxnRequest(success=(op_put(b"c", b"1"), op_get(b"c"), op_del(b"zz"), op_del(b"b"), op_put(b"d")))
    )
    assert r.revision == 5 and s.current_revision == 5
    put_r, get_r, del0, del1, put2 = (x for x in r.responses)
    assert put_r.response_put is not None and put_r.response_put.revision == 5
    assert get_r.response_range is not None
    assert get_r.response_range.kvs == (KeyValue(b"c", 5, 5, 1, b"1"),)
    assert get_r.response_range.revision == 5
    assert del0.response_delete_range is not None
    assert (del0.response_delete_range.revision, del0.response_delete_range.deleted) == (5, 0)
    assert del1.response_delete_range is not None and del1.response_delete_range.deleted == 1
    assert put2.response_put is not None and put2.response_put.revision == 5
    # Sub-revisions keep the txn's order.
    assert [rev for rev in s.kv._records if rev[0] == 5] == [(5, 0), (5, 1), (5, 2)]


def test_range_before_any_write_in_a_txn_reads_the_previous_revision(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_get(b"a"), op_put(b"a", b"3"))))
    rr = r.responses[0].response_range
    assert rr is not None and rr.revision == 4 and rr.kvs[0].value == b"2"


def test_delete_without_changes_in_a_txn_answers_the_old_revision(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_del(b"zz"),)))
    dr = r.responses[0].response_delete_range
    assert dr is not None and dr.revision == 4 and r.revision == 4


def test_nested_txn_compares_see_the_state_before_the_outer_txn(s: V3Store) -> None:
    # etcd 3.4.23: outer put of a new key, then a nested "version > 0" on it → failure branch.
    nested = op_txn(
        Compare(GT, CompareTarget.VERSION, b"new"),
        success=(op_put(b"nb"),),
        failure=(op_put(b"nc"), op_get(b"new")),
    )
    r = s.txn(TxnRequest(success=(op_put(b"new", b"1"), nested)))
    assert r.succeeded and r.revision == 5
    inner = r.responses[1].response_txn
    assert inner is not None and not inner.succeeded
    assert value(s, b"nc") == b"v" and value(s, b"nb") is None
    rr = inner.responses[1].response_range
    assert rr is not None and rr.kvs[0].value == b"1"


def test_nested_txns_on_both_levels_use_the_right_paths(s: V3Store) -> None:
    true = Compare(EQ, CompareTarget.VALUE, b"a", value=b"2")
    false = Compare(EQ, CompareTarget.VALUE, b"a", value=b"x")
    r = s.txn(
        TxnRequest(
            compare=(true,),
            success=(
                op_txn(false, success=(op_put(b"w1"),), failure=(op_put(b"l1"),)),
                op_txn(true, success=(op_txn(false, failure=(op_put(b"l3"),)), op_put(b"w2"))),
            ),
        )
    )
    assert r.succeeded
    assert [value(s, k) for k in (b"w1", b"l1", b"w2", b"l3")] == [None, b"v", b"v", b"v"]
    assert s.current_revision == 5


def test_put_checks_in_a_txn_come_before_range_checks(s: V3Store) -> None:
    # etcd 3.4.23: [range at a future revision, put ignore_value of a missing key] → key not found.
    with pytest.raises(V3KeyNotFound):
        s.txn(TxnRequest(success=(op_get(b"zz", revision=100), op_put(b"zz", b"", ignore_value=True))))
    with pytest.raises(V3FutureRevision):
        s.txn(TxnRequest(success=(op_get(b"zz", revision=100), op_put(b"zz"))))
    with pytest.raises(V3LeaseNotFound):
        s.txn(TxnRequest(success=(op_put(b"ok"), op_txn(success=(op_put(b"zz", lease=123),)))))
    assert s.current_revision == 4
    assert value(s, b"ok") is None


def test_checks_only_cover_the_taken_branch(s: V3Store) -> None:
    r = s.txn(
        TxnRequest(
            compare=(Compare(EQ, CompareTarget.VALUE, b"a", value=b"2"),),
            success=(op_put(b"ok"),),
            failure=(op_put(b"zz", lease=123), op_get(b"a", revision=99)),
        )
    )
    assert r.succeeded and value(s, b"ok") == b"v"


def test_txn_range_revisions_follow_etcds_check_range(s: V3Store) -> None:
    # etcd 3.4.23: -1 is fine before any compaction, -2 is "compacted"; after a compaction at
    # 0, -1 is compacted too. The compaction revision itself is readable.
    s.txn(TxnRequest(success=(op_get(b"a", revision=-1),)))
    with pytest.raises(V3Compacted):
        s.txn(TxnRequest(success=(op_get(b"a", revision=-2),)))
    s.compact(3)
    r = s.txn(TxnRequest(success=(op_get(b"a", revision=3),)))
    rr = r.responses[0].response_range
    assert rr is not None and rr.kvs[0].mod_revision == 3
    for rev in (2, -1):
        with pytest.raises(V3Compacted):
            s.txn(TxnRequest(success=(op_get(b"a", revision=rev),)))


def test_put_flags_in_a_txn(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_put(b"a", b"", ignore_value=True, prev_kv=True),)))
    pr = r.responses[0].response_put
    assert pr is not None and pr.prev_kv == KeyValue(b"a", 2, 3, 2, b"2")
    assert value(s, b"a") == b"2"


def test_delete_with_prev_kv_in_a_txn(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(op_del(b"a", b"c", prev_kv=True),)))
    dr = r.responses[0].response_delete_range
    assert dr is not None and dr.deleted == 2
    assert [kv.key for kv in dr.prev_kvs] == [b"a", b"b"]


def test_an_empty_op_that_slipped_through_is_a_no_op(s: V3Store) -> None:
    r = s.txn(TxnRequest(success=(RequestOp(), op_put(b"c"))))
    assert r.responses[0] == type(r.responses[0])()
    assert r.revision == 5
