"""KV service handlers: range, put, deleterange, txn, compaction.

Invariant: etcd's v3rpc checks run before the backend is called, and writes are size-checked
as the raft request they become; a read-only txn (ranges only) skips the raft size check, as
etcd serves it without raft. Must not import app or raft.
"""

from __future__ import annotations

from typing import Any

from store.apply import Result
from store.errors import ServerError, V3Error
from store.later import Later
from store.v3types import PutResponse, TxnRequest
from v3gateway import codec, validate
from v3gateway.backend import V3Backend
from v3gateway.codec import Obj
from v3gateway.common import RAFT_COMPACTION, RAFT_DELETE_RANGE, RAFT_PUT, RAFT_TXN, check_raft_size, header
from v3gateway.errors import GrpcError


async def range_(be: V3Backend, d: dict[str, Any]) -> Obj:
    req = codec.to_range_request(d)
    validate.check_range(req)
    resp = await be.v3_range(req)
    return codec.range_obj(header(be, resp.revision), resp)


def range_now(be: V3Backend, d: dict[str, Any]) -> Obj | None:
    """range_ when the backend can answer without waiting, else None (then range_ answers)."""
    req = codec.to_range_request(d)
    validate.check_range(req)
    resp = be.v3_range_now(req)
    if resp is None:
        return None
    return codec.range_obj(header(be, resp.revision), resp)


def put_later(be: V3Backend, d: dict[str, Any], size: int) -> Later[Obj] | None:
    """put without a task where the backend can propose at once: the answer object to come
    (or the GrpcError a failed apply means), else None (then put answers). `size`: the
    request's protobuf size (codec.proto_size), which the caller has computed already."""
    req = codec.to_put_request(d)
    validate.check_put(req)
    check_raft_size(be, RAFT_PUT, size)
    answer: Later[Obj] = Later()

    def applied(r: Result | ServerError) -> None:
        if answer.done():
            return
        try:
            if isinstance(r, ServerError):
                raise r
            if isinstance(r, V3Error):
                raise GrpcError(r.message, r.grpc_code)
            assert isinstance(r, PutResponse), r
            answer.set_result(codec.put_obj(header(be, r.revision), r))
        except Exception as exc:  # ServerError, GrpcError: the caller answers the error
            answer.set_exception(exc)

    if not be.v3_put_local(req, applied):
        return None
    return answer


async def put(be: V3Backend, d: dict[str, Any]) -> Obj:
    req = codec.to_put_request(d)
    validate.check_put(req)
    check_raft_size(be, RAFT_PUT, codec.proto_size(codec.PUT_REQUEST, d))
    resp = await be.v3_put(req)
    return codec.put_obj(header(be, resp.revision), resp)


async def delete_range(be: V3Backend, d: dict[str, Any]) -> Obj:
    req = codec.to_delete_range_request(d)
    validate.check_delete_range(req)
    check_raft_size(be, RAFT_DELETE_RANGE, codec.proto_size(codec.DELETE_RANGE_REQUEST, d))
    resp = await be.v3_delete_range(req)
    return codec.delete_range_obj(header(be, resp.revision), resp)


def is_read_only(req: TxnRequest) -> bool:
    """etcd isTxnReadonly: every op of both branches is a range (a nested txn is not)."""
    return all(op.request_range is not None for op in (*req.success, *req.failure))


async def txn(be: V3Backend, d: dict[str, Any]) -> Obj:
    req = codec.to_txn_request(d)
    validate.check_txn(req, be.v3_limits()[1])
    if not is_read_only(req):
        check_raft_size(be, RAFT_TXN, codec.proto_size(codec.TXN_REQUEST, d))
    resp = await be.v3_txn(req)
    return codec.txn_obj(header(be, resp.revision), resp)


async def compaction(be: V3Backend, d: dict[str, Any]) -> Obj:
    req = codec.to_compaction_request(d)
    check_raft_size(be, RAFT_COMPACTION, codec.proto_size(codec.COMPACTION_REQUEST, d))
    revision = await be.v3_compact(req)
    return {"header": header(be, revision)}
