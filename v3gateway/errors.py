"""gRPC status codes, etcd's error strings, and the grpc-gateway error envelopes.

Invariant: this is the only place where a gRPC code becomes an HTTP status (the table of the
installed etcd 3.4.23, built with grpc-gateway 1.6.4: FAILED_PRECONDITION → 412). Three shapes:
- decode error (never reached gRPC): `{"error","message","code"}` with Content-Length;
- unary error from etcd: same body, always chunked, `Trailer: Grpc-Trailer-Content-Type` and
  the trailer itself when the ASGI server offers `http.response.trailers` (uvicorn does not:
  then the header is announced and the trailer is missing, the closest HTTP/1.1 approximation);
- stream error: `{"error":{"grpc_code","http_code","message","http_status"}}`, no newline.
Must not import app, raft or v2api.
"""

from __future__ import annotations

import enum
from typing import Final

from store.errors import ServerError
from v3gateway.codec import dumps
from v3gateway.http import CT_JSON, Headers, Scope, Send, respond, supports_trailers


class Code(enum.IntEnum):
    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_STATUS: Final[dict[int, int]] = {
    Code.OK: 200,
    Code.CANCELED: 408,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 412,  # grpc-gateway 1.6.4 (upstream 1.9.5 says 400)
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# Go net/http StatusText for the statuses above.
STATUS_TEXT: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 500)


class GrpcError(Exception):
    """An error as the gRPC server would return it: etcd's message and the status code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# etcd rpctypes errors the gateway raises itself (before the request would reach raft).
def empty_key() -> GrpcError:
    return GrpcError("etcdserver: key is not provided", Code.INVALID_ARGUMENT)


def key_not_found() -> GrpcError:
    return GrpcError("etcdserver: key not found", Code.INVALID_ARGUMENT)


def value_provided() -> GrpcError:
    return GrpcError("etcdserver: value is provided", Code.INVALID_ARGUMENT)


def lease_provided() -> GrpcError:
    return GrpcError("etcdserver: lease is provided", Code.INVALID_ARGUMENT)


def too_many_ops() -> GrpcError:
    return GrpcError("etcdserver: too many operations in txn request", Code.INVALID_ARGUMENT)


def duplicate_key() -> GrpcError:
    return GrpcError("etcdserver: duplicate key given in txn request", Code.INVALID_ARGUMENT)


def request_too_large() -> GrpcError:
    return GrpcError("etcdserver: request is too large", Code.INVALID_ARGUMENT)


def grpc_message_too_large(size: int, limit: int) -> GrpcError:
    return GrpcError(f"grpc: received message larger than max ({size} vs. {limit})", Code.RESOURCE_EXHAUSTED)


def from_server_error(exc: ServerError) -> GrpcError:
    """Server-side failures (leader lost, timeout, stopped) are UNAVAILABLE in etcd."""
    return GrpcError(exc.cause, Code.UNAVAILABLE)


def error_body(message: str, code: int) -> bytes:
    return dumps({"error": message, "message": message, "code": code})


async def send_decode_error(send: Send, message: str, code: int, extra: Headers) -> None:
    """The gateway's own error (bad JSON): never reached gRPC, so no Trailer, Content-Length."""
    await respond(send, http_status(code), [CT_JSON, *extra], error_body(message, code))


async def send_unary_error(scope: Scope, send: Send, err: GrpcError, extra: Headers) -> None:
    trailers = supports_trailers(scope)
    headers: Headers = [CT_JSON, *extra, (b"trailer", b"Grpc-Trailer-Content-Type")]
    start: dict[str, object] = {
        "type": "http.response.start",
        "status": http_status(err.code),
        "headers": headers,
    }
    if trailers:
        start["trailers"] = True
    await send(start)
    # Two body messages and no Content-Length: the server has to use chunked framing.
    await send({"type": "http.response.body", "body": error_body(err.message, err.code), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if trailers:
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"grpc-trailer-content-type", b"application/grpc")],
                "more_trailers": False,
            }
        )


def stream_error_body(err: GrpcError) -> bytes:
    status = http_status(err.code)
    body: dict[str, object] = {"grpc_code": err.code} if err.code else {}
    body["http_code"] = status
    if err.message:
        body["message"] = err.message
    body["http_status"] = STATUS_TEXT.get(status, "")
    return dumps({"error": body})
