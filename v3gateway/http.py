"""ASGI plumbing for the gateway: types, Go net/http framing, body reading.

Invariant: a unary body of at most 2048 bytes carries Content-Length, a bigger one goes out
chunked (Go's ResponseWriter without an explicit length); stream messages go out one ASGI body
message (one HTTP chunk) each. Must not import app, raft or v2api.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

GO_CHUNK_THRESHOLD: Final = 2048
CT_JSON: Final = (b"content-type", b"application/json")
CT_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
GRPC_METADATA: Final = (b"grpc-metadata-content-type", b"application/grpc")


class BodyTooLarge(Exception):
    """The request body passed the gateway's read cap."""


async def respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    if len(body) <= GO_CHUNK_THRESHOLD:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises BodyTooLarge past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def header_value(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return bytes(v)
    return None


def supports_trailers(scope: Scope) -> bool:
    return "http.response.trailers" in (scope.get("extensions") or {})
