"""etcd's pre-raft request checks (api/v3rpc/key.go) and the gateway error envelopes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from store.v3types import (
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from v3gateway import errors, validate
from v3gateway.errors import Code, GrpcError


def put(key: bytes) -> RequestOp:
    return RequestOp(request_put=PutRequest(key, b"v"))


def delete(key: bytes, end: bytes = b"") -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key, end))


def txn(success: tuple[RequestOp, ...] = (), failure: tuple[RequestOp, ...] = ()) -> RequestOp:
    return RequestOp(request_txn=TxnRequest(success=success, failure=failure))


def message_of(req: TxnRequest, max_ops: int = 128) -> str | None:
    try:
        validate.check_txn(req, max_ops)
    except GrpcError as err:
        return err.message
    return None


DUP = "etcdserver: duplicate key given in txn request"
TOO_MANY = "etcdserver: too many operations in txn request"


def test_put_checks_in_etcd_order() -> None:
    with pytest.raises(GrpcError, match="key is not provided"):
        validate.check_put(PutRequest(b"", b"v", ignore_value=True))
    with pytest.raises(GrpcError, match="value is provided"):
        validate.check_put(PutRequest(b"k", b"v", ignore_value=True, ignore_lease=True, lease=5))
    with pytest.raises(GrpcError, match="lease is provided"):
        validate.check_put(PutRequest(b"k", ignore_lease=True, lease=5))
    validate.check_put(PutRequest(b"k", ignore_value=True, ignore_lease=True))
    with pytest.raises(GrpcError, match="key is not provided"):
        validate.check_range(RangeRequest(b""))
    with pytest.raises(GrpcError, match="key is not provided"):
        validate.check_delete_range(DeleteRangeRequest(b""))


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (TxnRequest(success=tuple(put(b"k%d" % i) for i in range(129))), TOO_MANY),
        (TxnRequest(success=tuple(put(b"k%d" % i) for i in range(128))), None),
        (TxnRequest(compare=tuple(Compare(key=b"k") for _ in range(129))), TOO_MANY),
        # the nested budget is what the outer level leaves: 128 - 100
        (
            TxnRequest(
                success=(
                    *(put(b"k%d" % i) for i in range(99)),
                    txn(tuple(put(b"n%d" % i) for i in range(29))),
                )
            ),
            TOO_MANY,
        ),
        (
            TxnRequest(
                success=(
                    *(put(b"k%d" % i) for i in range(99)),
                    txn(tuple(put(b"n%d" % i) for i in range(28))),
                )
            ),
            None,
        ),
        (TxnRequest(success=(RequestOp(),)), "etcdserver: key not found"),
        (TxnRequest(compare=(Compare(key=b""),)), "etcdserver: key is not provided"),
        (
            TxnRequest(success=(RequestOp(request_range=RangeRequest(b"")),)),
            "etcdserver: key is not provided",
        ),
        (TxnRequest(failure=(txn((put(b""),)),)), "etcdserver: key is not provided"),
        (TxnRequest(success=(put(b"a"), put(b"a"))), DUP),
        (TxnRequest(success=(put(b"a"), delete(b"a"))), DUP),
        (TxnRequest(success=(put(b"a/x"), delete(b"a/", b"a0"))), DUP),
        (TxnRequest(success=(put(b"a"),), failure=(put(b"a"),)), None),
        (TxnRequest(success=(delete(b"a"), delete(b"a"))), None),
        (TxnRequest(success=(put(b"b"), delete(b"a", b"\x00"))), None),  # etcd: [a, "\0") is empty
        (TxnRequest(success=(put(b"b"), delete(b"a", b"a"))), None),
        (TxnRequest(success=(put(b"a"), txn((put(b"a"),)))), DUP),
        (TxnRequest(success=(delete(b"a"), txn((put(b"a"),)))), DUP),
        (TxnRequest(success=(txn((delete(b"a"),)), put(b"a"))), DUP),
        (TxnRequest(success=(txn((put(b"a"),), (put(b"a"),)),)), None),  # then/else exclusive
        (TxnRequest(success=(txn((put(b"a"),)), txn((), (put(b"a"),)))), DUP),
        (TxnRequest(success=(txn((put(b"a"),)), txn((put(b"a"),)))), DUP),
    ],
)
def test_txn_checks(req: TxnRequest, expected: str | None) -> None:
    assert message_of(req) == expected


def test_txn_limit_is_configurable() -> None:
    req = TxnRequest(success=tuple(put(b"k%d" % i) for i in range(3)))
    assert message_of(req, 2) == TOO_MANY
    assert message_of(req, 3) is None


def test_status_table_is_the_installed_gateways() -> None:
    assert errors.http_status(Code.FAILED_PRECONDITION) == 412
    assert errors.http_status(Code.RESOURCE_EXHAUSTED) == 429
    assert errors.http_status(Code.OUT_OF_RANGE) == 400
    assert errors.http_status(Code.UNAVAILABLE) == 503
    assert errors.http_status(Code.UNAUTHENTICATED) == 401
    assert errors.http_status(Code.CANCELED) == 408
    assert [errors.http_status(c) for c in range(17)] == [
        200, 408, 500, 400, 504, 404, 409, 403, 429, 412, 409, 400, 501, 500, 503, 500, 401,
    ]  # fmt: skip


async def _capture(scope: dict[str, Any], err: GrpcError) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(msg: Any) -> None:
        sent.append(dict(msg))

    await errors.send_unary_error(scope, send, err, [])
    return sent


def test_unary_error_envelope_is_chunked_with_trailer() -> None:
    sent = anyio.run(_capture, {"type": "http"}, errors.duplicate_key())
    start, body, last = sent
    assert start["status"] == 400
    headers = dict(start["headers"])
    assert headers[b"trailer"] == b"Grpc-Trailer-Content-Type"
    assert b"content-length" not in headers and b"grpc-metadata-content-type" not in headers
    assert body["body"] == (
        b'{"error":"etcdserver: duplicate key given in txn request",'
        b'"message":"etcdserver: duplicate key given in txn request","code":3}'
    )
    assert last == {"type": "http.response.body", "body": b"", "more_body": False}


def test_unary_error_sends_the_trailer_when_the_server_supports_it() -> None:
    scope = {"type": "http", "extensions": {"http.response.trailers": {}}}
    sent = anyio.run(_capture, scope, GrpcError("etcdserver: lease already exists", Code.FAILED_PRECONDITION))
    assert sent[0]["status"] == 412 and sent[0]["trailers"] is True
    assert sent[-1] == {
        "type": "http.response.trailers",
        "headers": [(b"grpc-trailer-content-type", b"application/grpc")],
        "more_trailers": False,
    }


def test_stream_error_body() -> None:
    body = errors.stream_error_body(GrpcError("auth: permission denied", Code.UNKNOWN))
    assert body == (
        b'{"error":{"grpc_code":2,"http_code":500,"message":"auth: permission denied",'
        b'"http_status":"Internal Server Error"}}'
    )
    assert errors.grpc_message_too_large(2150410, 2097152).message == (
        "grpc: received message larger than max (2150410 vs. 2097152)"
    )
