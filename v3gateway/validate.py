"""etcd's request checks that run before a request reaches raft (etcd 3.4 api/v3rpc/key.go).

Invariant: the order of the checks, and so which error wins when several apply, is etcd's:
range/put/delete field checks; for a txn the op count (max of compare/success/failure, with
the remaining budget passed down to nested txns), empty compare keys, every op recursively,
then the put/delete overlap check of each branch (checkIntervals). Must not import app or raft.
"""

from __future__ import annotations

from store.v3types import DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest
from v3gateway import errors


def check_range(r: RangeRequest) -> None:
    if not r.key:
        raise errors.empty_key()


def check_put(r: PutRequest) -> None:
    if not r.key:
        raise errors.empty_key()
    if r.ignore_value and r.value:
        raise errors.value_provided()
    if r.ignore_lease and r.lease:
        raise errors.lease_provided()


def check_delete_range(r: DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.empty_key()


def check_txn(r: TxnRequest, max_txn_ops: int) -> None:
    """checkTxnRequest, then checkIntervals over success and failure (as kvServer.Txn)."""
    _check_txn_request(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def _check_txn_request(r: TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise errors.too_many_ops()
    for c in r.compare:
        if not c.key:
            raise errors.empty_key()
    for op in (*r.success, *r.failure):
        _check_op(op, max_txn_ops - opc)


def _check_op(op: RequestOp, max_txn_ops: int) -> None:
    if op.request_range is not None:
        check_range(op.request_range)
    elif op.request_put is not None:
        check_put(op.request_put)
    elif op.request_delete_range is not None:
        check_delete_range(op.request_delete_range)
    elif op.request_txn is not None:
        _check_txn_request(op.request_txn, max_txn_ops)
    else:
        raise errors.key_not_found()  # etcd: an empty RequestOp


# Intervals are [begin, end) over byte strings; end b"" means +infinity (etcd's
# StringAffineComparable treats the empty string as the largest value).
Interval = tuple[bytes, bytes]


def _before(a: bytes, b: bytes) -> bool:
    """a < b with b"" as +infinity."""
    if not b:
        return bool(a)
    if not a:
        return False
    return a < b


def _intersects_point(dels: list[Interval], key: bytes) -> bool:
    point_end = key + b"\x00"
    for begin, end in dels:
        # [begin, end) ∩ [key, key+"\0") is non-empty
        if _before(begin, point_end) and _before(key, end):
            return True
    return False


def _check_intervals(ops: tuple[RequestOp, ...]) -> tuple[set[bytes], list[Interval]]:
    """etcd checkIntervals: a key put twice, or put and deleted, in one branch is an error."""
    dels: list[Interval] = []
    for op in ops:
        d = op.request_delete_range
        if d is None:
            continue
        if d.range_end:
            # adt.NewStringAffineInterval: an end <= begin yields an empty interval.
            dels.append((d.key, d.range_end))
        else:
            dels.append((d.key, d.key + b"\x00"))
    puts: set[bytes] = set()
    for op in ops:
        t = op.request_txn
        if t is None:
            continue
        puts_then, dels_then = _check_intervals(t.success)
        puts_else, dels_else = _check_intervals(t.failure)
        for k in puts_then:
            if k in puts or _intersects_point(dels, k):
                raise errors.duplicate_key()
            puts.add(k)
        for k in puts_else:
            if k in puts and k not in puts_then:
                raise errors.duplicate_key()
            if _intersects_point(dels, k):
                raise errors.duplicate_key()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        p = op.request_put
        if p is None:
            continue
        if p.key in puts or _intersects_point(dels, p.key):
            raise errors.duplicate_key()
        puts.add(p.key)
    return puts, dels
