"""v3 state snapshot round-trip, the v3 command codec and the Applier's v3 dispatch."""

from __future__ import annotations

import orjson
import pytest

from store.apply import Applier
from store.commands import (
    CommandDecodeError,
    Noop,
    V2Set,
    V3Compact,
    V3DeleteRange,
    V3LeaseGrant,
    V3LeaseRevoke,
    V3Put,
    V3Txn,
    decode,
    encode,
)
from store.errors import V3Compacted, V3LeaseNotFound
from store.v3.state import V3Store
from store.v3types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseInfo,
    PutRequest,
    PutResponse,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

ALL = RangeRequest(b"\0", b"\0")


def busy_store() -> V3Store:
    s = V3Store()
    s.lease_grant(7, 30)
    s.lease_grant(-2, 5)
    for i in range(20):
        s.put(PutRequest(f"k{i % 6}".encode(), bytes([i, 0, 255]), lease=7 if i % 4 == 0 else 0))
        if i % 5 == 4:
            s.delete_range(DeleteRangeRequest(b"k1", b"k3"))
    s.put(PutRequest(b"\xff\x00binary", b"\x00"))
    s.compact(10)
    s.put(PutRequest(b"after", lease=-2))
    return s


def answers(s: V3Store) -> list[object]:
    out: list[object] = [s.current_revision, s.compact_revision, s.hash(), s.db_size(), s.leases()]
    out += [s.lease_get(i) for i in s.leases()]
    for rev in range(s.compact_revision, s.current_revision + 1):
        out.append(s.range(RangeRequest(b"\0", b"\0", revision=rev)))
    w = s.watch(b"\0", b"\0", s.compact_revision, prev_kv=True, no_put=False, no_delete=False)
    out.append(list(w.batches))
    w.cancel()
    return out


def test_snapshot_round_trip_answers_identically() -> None:
    s = busy_store()
    o = s.to_obj()
    data = orjson.dumps(o, option=orjson.OPT_SORT_KEYS)
    t = V3Store()
    t.load_obj(orjson.loads(data))
    assert answers(t) == answers(s)
    assert orjson.dumps(t.to_obj(), option=orjson.OPT_SORT_KEYS) == data
    # Lease attachments come back from the live keys.
    assert t.lease_get(-2) == LeaseInfo(-2, 5, (b"after",))
    # And the restored store keeps working the same way.
    for st in (s, t):
        st.put(PutRequest(b"k0", b"next"))
        st.lease_revoke(7)
        st.compact(st.current_revision - 1)
    assert answers(t) == answers(s)


def test_snapshot_is_deterministic() -> None:
    a, b = busy_store(), busy_store()
    assert orjson.dumps(a.to_obj()) == orjson.dumps(b.to_obj())


def test_load_obj_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        V3Store().load_obj({"format": 99})


def test_watchers_catch_up_after_a_restore() -> None:
    s = busy_store()
    w = s.watch(b"k0", b"", 0, prev_kv=False, no_put=False, no_delete=False)
    ahead = busy_store()
    ahead.put(PutRequest(b"k0", b"newer"))
    s.load_obj(ahead.to_obj())
    assert [(rev, [e.kv.value for e in evs]) for rev, evs in w.batches] == [
        (ahead.current_revision, [b"newer"])
    ]


def test_watchers_behind_a_restored_compaction_are_cancelled_as_compacted() -> None:
    s = V3Store()
    s.put(PutRequest(b"a"))
    w = s.watch(b"a", b"", 0, prev_kv=False, no_put=False, no_delete=False)
    woken: list[bool] = []
    w.wake = lambda: woken.append(True)
    ahead = V3Store()
    for _ in range(5):
        ahead.put(PutRequest(b"a"))
    ahead.compact(5)
    s.load_obj(ahead.to_obj())
    assert (w.compacted, w.active, woken) == (5, False, [True])


# ---- codec -----------------------------------------------------------------------------------

NESTED = TxnRequest(
    compare=(
        Compare(CompareResult.GREATER, CompareTarget.VALUE, b"\x00k", b"\xff", value=b"\x01\x02"),
        Compare(key=b"a", version=3),
        Compare(CompareResult.NOT_EQUAL, CompareTarget.LEASE, b"l", lease=-(2**63)),
    ),
    success=(
        RequestOp(request_put=PutRequest(b"k", b"\x00" * 10, 2**63 - 1, True, True, True)),
        RequestOp(
            request_range=RangeRequest(
                b"a", b"\0", 5, 3, SortOrder.DESCEND, SortTarget.VALUE, True, True, True, 1, 2, 3, 4
            )
        ),
        RequestOp(request_delete_range=DeleteRangeRequest(b"d", b"e", True)),
        RequestOp(),
        RequestOp(request_txn=TxnRequest(success=(RequestOp(request_txn=TxnRequest()),))),
    ),
    failure=(RequestOp(request_range=RangeRequest(b"x", sort_order=7, sort_target=9)),),
)


@pytest.mark.parametrize(
    "cmd",
    [
        V3Put(PutRequest(b"foo", b"bar")),
        V3Put(PutRequest(b"\x00\xff", b"", lease=-5, prev_kv=True)),
        V3DeleteRange(DeleteRangeRequest(b"a", b"\0", prev_kv=True)),
        V3Txn(TxnRequest()),
        V3Txn(NESTED),
        V3Compact(0),
        V3Compact(123),
        V3LeaseGrant(-1, 9_000_000_000),
        V3LeaseRevoke(2**63 - 1),
    ],
)
def test_v3_commands_round_trip(cmd: V3Put) -> None:
    assert decode(encode(42, cmd)) == (42, cmd)


def test_v2_commands_still_encode_as_before() -> None:
    cmd = V2Set("/1/a", "x", False, None, False)
    assert encode(3, cmd) == b'[3,1,"/1/a","x",false,null,false]'
    assert decode(b"[3,9]") == (3, Noop())


def test_a_small_put_encodes_compactly() -> None:
    assert encode(1, V3Put(PutRequest(b"foo", b"bar"))) == b'[1,10,["Zm9v","YmFy"]]'


def test_missing_trailing_fields_decode_as_defaults() -> None:
    # An entry written before a field was appended to a request type still decodes.
    assert decode(b'[1,10,["Zm9v"]]') == (1, V3Put(PutRequest(b"foo")))


@pytest.mark.parametrize(
    "data",
    [
        b'[1,10,["not base64!"]]',
        b"[1,10,[1]]",
        b'[1,10,["Zm9v","YmFy",0,false,false,false,"extra"]]',
        b"[1,12,[[],[[9,[]]],[]]]",
        b'[1,13,"x"]',
        b"[1,14,[1]]",
        b"[1,99,1]",
    ],
)
def test_bad_v3_entries_raise_decode_errors(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode(data)


# ---- applier ---------------------------------------------------------------------------------


def test_applier_dispatches_v3_commands_and_returns_errors_as_results() -> None:
    a = Applier()
    assert a.apply(1, V3LeaseGrant(5, 10)) == LeaseInfo(5, 10, ())
    assert a.apply(2, V3Put(PutRequest(b"a", b"1", lease=5))) == PutResponse(2)
    assert a.apply(3, V3Put(PutRequest(b"b", lease=6))) == V3LeaseNotFound()
    r = a.apply(4, V3Txn(TxnRequest(success=(RequestOp(request_put=PutRequest(b"c")),))))
    assert isinstance(r, TxnResponse) and r.revision == 3
    assert a.apply(5, V3DeleteRange(DeleteRangeRequest(b"c"))) == DeleteRangeResponse(4, 1)
    assert a.apply(6, V3Compact(3)) == 4
    assert a.apply(7, V3Compact(2)) == V3Compacted()
    assert a.apply(8, V3LeaseRevoke(5)) == 5
    assert a.apply(9, V3LeaseRevoke(5)) == V3LeaseNotFound()
    assert a.applied_index == 9
    assert a.v3.range(RangeRequest(b"a")).kvs == ()


def test_applier_snapshot_includes_v3_and_restores_it() -> None:
    a = Applier()
    a.apply(1, V3Put(PutRequest(b"a", b"1")))
    a.apply(2, V2Set("/1/x", "y", False, None, False))
    data = a.snapshot()
    b = Applier()
    b.restore(data)
    assert b.snapshot() == data
    assert b.v3.range(ALL) == a.v3.range(ALL)
    assert b.v3.hash() == a.v3.hash()


def test_applier_restores_a_snapshot_without_v3() -> None:
    a = Applier()
    a.apply(1, V3Put(PutRequest(b"a", b"1")))
    old = orjson.loads(Applier().snapshot())
    del old["v3"]
    a.restore(orjson.dumps(old))
    assert a.v3.current_revision == 1 and a.v3.range(ALL).kvs == ()


def test_nospace_alarm_refuses_growing_writes_until_disarmed() -> None:
    from store.apply import ALARM_ACTIVATE, ALARM_DEACTIVATE, ALARM_GET, ALARM_NOSPACE, Applier
    from store.commands import V3Alarm, V3DeleteRange, V3LeaseGrant, V3Put, V3Txn
    from store.errors import V3NoSpace
    from store.v3types import DeleteRangeRequest, PutRequest, RequestOp, TxnRequest

    a = Applier()
    assert not isinstance(a.apply(1, V3Put(PutRequest(b"k", b"v"))), Exception)
    assert a.apply(2, V3Alarm(ALARM_ACTIVATE, 7, ALARM_NOSPACE)) == ((7, ALARM_NOSPACE),)
    assert isinstance(a.apply(3, V3Put(PutRequest(b"k2", b"v"))), V3NoSpace)
    assert isinstance(a.apply(4, V3LeaseGrant(5, 10)), V3NoSpace)
    put_txn = TxnRequest(success=(RequestOp(request_put=PutRequest(b"x", b"y")),))
    assert isinstance(a.apply(5, V3Txn(put_txn)), V3NoSpace)
    del_txn = TxnRequest(success=(RequestOp(request_delete_range=DeleteRangeRequest(b"k")),))
    assert not isinstance(a.apply(6, V3Txn(del_txn)), Exception)  # deletes free space: allowed
    assert not isinstance(a.apply(7, V3DeleteRange(DeleteRangeRequest(b"k"))), Exception)
    assert a.apply(8, V3Alarm(ALARM_GET, 0, 0)) == ((7, ALARM_NOSPACE),)
    restored = Applier()
    restored.restore(a.snapshot())
    assert restored.alarms == {(7, ALARM_NOSPACE)}
    assert a.apply(9, V3Alarm(ALARM_DEACTIVATE, 7, ALARM_NOSPACE)) == ((7, ALARM_NOSPACE),)
    assert a.apply(10, V3Alarm(ALARM_DEACTIVATE, 7, ALARM_NOSPACE)) == ()
    assert not isinstance(a.apply(11, V3Put(PutRequest(b"k2", b"v"))), Exception)
