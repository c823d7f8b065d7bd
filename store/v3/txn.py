"""v3 request semantics over an MVCC Txn: range options, put flags, delete, txn compares.

This is etcd 3.4's `etcdserver/apply.go` (applierV3backend Range/Put/DeleteRange/Txn). Requests
arrive validated by the gateway (empty keys, op limits, duplicate keys: etcd's v3rpc checks);
what can still fail depends on state and is checked here *before* anything is written.

Invariants:
- a Txn's compares are all evaluated against the state before the Txn (etcd compareToPath),
  nested ones included; the chosen path is then checked (puts: lease exists, ignore_* key
  exists; ranges: revision not compacted/future) and only then executed;
- results follow etcd's order of processing for range: fetch (limit+1 unless sorting or
  filtering), filter by mod/create bounds, sort, truncate, strip values.

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from store.errors import V3Compacted, V3FutureRevision, V3KeyNotFound, V3LeaseNotFound
from store.v3.kv import Txn
from store.v3types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)


def gte_range(range_end: bytes) -> bytes | None:
    """etcd mkGteRange, in the index's terms: b"" → the single key (None); b"\\0" → every key
    from `key` on (b""); anything else → [key, range_end)."""
    if range_end == b"":
        return None
    if range_end == b"\0":
        return b""
    return range_end


# ---- range -----------------------------------------------------------------------------------

_SORT_KEYS: dict[int, Callable[[KeyValue], int | bytes]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def execute_range(t: Txn, req: RangeRequest) -> RangeResponse:
    """Raises V3FutureRevision / V3Compacted (before reading anything)."""
    limit = req.limit
    if (
        req.sort_order != SortOrder.NONE
        or req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    ):
        # Sorting and filtering need every match; truncation happens afterwards.
        limit = 0
    if limit > 0:
        limit += 1  # one extra tells whether there is `more`
    kvs, count = t.range_keys(req.key, gte_range(req.range_end), req.revision, limit, req.count_only)

    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]

    order = req.sort_order
    if req.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        # etcd: results come in key order already; any other target means ascending.
        order = SortOrder.ASCEND
    sort_key = _SORT_KEYS.get(req.sort_target)
    if sort_key is not None and order in (SortOrder.ASCEND, SortOrder.DESCEND):
        # etcd uses Go's unstable sort.Sort; for the small results that matter it keeps key
        # order among ties, even for DESCEND (observed). Python's sort is stable, also with
        # reverse=True, and `kvs` is in key order, so ties stay in ascending key order.
        kvs = sorted(kvs, key=sort_key, reverse=order == SortOrder.DESCEND)

    more = False
    if req.limit > 0 and len(kvs) > req.limit:
        kvs = kvs[: req.limit]
        more = True
    if req.keys_only:
        kvs = [KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease) for kv in kvs]
    return RangeResponse(revision=t.read_rev, kvs=tuple(kvs), more=more, count=count)


# ---- put / delete ----------------------------------------------------------------------------


def check_put(t: Txn, req: PutRequest, lease_exists: Callable[[int], bool]) -> None:
    """etcd applierV3backend.checkPut, in its order: key for ignore_*, then the lease."""
    if (req.ignore_value or req.ignore_lease) and t.get(req.key) is None:
        raise V3KeyNotFound()
    if req.lease and not lease_exists(req.lease):
        raise V3LeaseNotFound()


def execute_put(t: Txn, req: PutRequest) -> PutResponse:
    """The put, after check_put passed (nothing here raises)."""
    value, lease = req.value, req.lease
    prev = t.get(req.key) if (req.ignore_value or req.ignore_lease or req.prev_kv) else None
    # A missing key was rejected by check_put; within a txn the gateway's duplicate-key check
    # keeps earlier ops from deleting it, so `prev` is there whenever ignore_* is set.
    if req.ignore_value and prev is not None:
        value = prev.value
    if req.ignore_lease and prev is not None:
        lease = prev.lease
    rev = t.put(req.key, value, lease)
    return PutResponse(revision=rev, prev_kv=prev if req.prev_kv else None)


def execute_delete(t: Txn, req: DeleteRangeRequest) -> DeleteRangeResponse:
    deleted = t.delete_range(req.key, gte_range(req.range_end))
    # etcd storeTxnWrite.DeleteRange: beginRev+1 once the txn wrote anything, else beginRev.
    return DeleteRangeResponse(
        revision=t.read_rev,
        deleted=len(deleted),
        prev_kvs=tuple(deleted) if req.prev_kv else (),
    )


# ---- txn -------------------------------------------------------------------------------------


def compare(t: Txn, c: Compare) -> bool:
    """etcd applyCompare: every key in the range must satisfy it; VALUE on nothing is false."""
    try:
        kvs, _ = t.range_keys(c.key, gte_range(c.range_end), 0)
    except (V3Compacted, V3FutureRevision):  # cannot happen at revision 0; etcd returns false
        return False
    if not kvs:
        if c.target == CompareTarget.VALUE:
            # nil == empty in gRPC: there is no way to express "missing value", so never true.
            return False
        return _compare_kv(c, KeyValue(c.key))
    return all(_compare_kv(c, kv) for kv in kvs)


def _cmp_int(a: int, b: int) -> int:
    return (a > b) - (a < b)


def _cmp_bytes(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    match c.target:
        case CompareTarget.VALUE:
            r = _cmp_bytes(kv.value, c.value)
        case CompareTarget.CREATE:
            r = _cmp_int(kv.create_revision, c.create_revision)
        case CompareTarget.MOD:
            r = _cmp_int(kv.mod_revision, c.mod_revision)
        case CompareTarget.VERSION:
            r = _cmp_int(kv.version, c.version)
        case CompareTarget.LEASE:
            r = _cmp_int(kv.lease, c.lease)
        case _:
            r = 0  # unknown target: etcd leaves result 0
    match c.result:
        case CompareResult.EQUAL:
            return r == 0
        case CompareResult.NOT_EQUAL:
            return r != 0
        case CompareResult.GREATER:
            return r > 0
        case CompareResult.LESS:
            return r < 0
        case _:
            return True  # unknown result: etcd's compareKV falls through to true


def txn_path(t: Txn, req: TxnRequest) -> list[bool]:
    """etcd compareToPath: the outcome of every txn on the taken path, depth-first preorder."""
    ok = all(compare(t, c) for c in req.compare)
    path = [ok]
    for op in req.success if ok else req.failure:
        if op.request_txn is not None:
            path.extend(txn_path(t, op.request_txn))
    return path


def _taken_ops(req: TxnRequest, path: Iterator[bool]) -> Iterator[RequestOp]:
    """Every non-txn op on the taken path, in execution order."""
    for op in req.success if next(path) else req.failure:
        if op.request_txn is not None:
            yield from _taken_ops(op.request_txn, path)
        else:
            yield op


def check_txn(t: Txn, req: TxnRequest, path: list[bool], lease_exists: Callable[[int], bool]) -> None:
    """etcd checkRequests: first every put on the path, then every range."""
    for op in _taken_ops(req, iter(path)):
        if op.request_put is not None:
            check_put(t, op.request_put, lease_exists)
    compact_main, current = t.kv.compact_main, t.begin_rev
    for op in _taken_ops(req, iter(path)):
        rr = op.request_range
        if rr is None or rr.revision == 0:
            continue
        # etcd checkRange compares against compactMainRev (-1 before any compaction) without
        # first mapping negative revisions to the current one, unlike a plain range: observed
        # on 3.4.23, revision -2 in a txn is "compacted" even on a never-compacted store.
        if rr.revision > current:
            raise V3FutureRevision()
        if rr.revision < compact_main:
            raise V3Compacted()


def execute_txn(t: Txn, req: TxnRequest, path: Iterator[bool]) -> TxnResponse:
    """Run the taken branch (after check_txn); nested txns consume `path` in preorder."""
    ok = next(path)
    responses: list[ResponseOp] = []
    for op in req.success if ok else req.failure:
        if op.request_range is not None:
            responses.append(ResponseOp(response_range=execute_range(t, op.request_range)))
        elif op.request_put is not None:
            responses.append(ResponseOp(response_put=execute_put(t, op.request_put)))
        elif op.request_delete_range is not None:
            responses.append(ResponseOp(response_delete_range=execute_delete(t, op.request_delete_range)))
        elif op.request_txn is not None:
            responses.append(ResponseOp(response_txn=execute_txn(t, op.request_txn, path)))
        else:
            # The gateway rejects an empty op ("key not found"); should one get here, it is a
            # no-op with an empty response rather than a failure halfway through the txn.
            responses.append(ResponseOp())
    return TxnResponse(revision=t.read_rev, succeeded=ok, responses=tuple(responses))
