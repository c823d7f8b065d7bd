"""Minimal ASGI response helpers that reproduce Go net/http's framing.

Invariant: a body of at most 2048 bytes carries Content-Length, a bigger one goes out chunked
(Go's default when the handler neither sets a length nor flushes); HEAD sends the headers a GET
would, without the body. Must not import raft or app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from v2api.render import go_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

GO_CHUNK_THRESHOLD = 2048

CT_JSON = (b"content-type", b"application/json")
CT_TEXT = (b"content-type", b"text/plain; charset=utf-8")
NOSNIFF = (b"x-content-type-options", b"nosniff")


def go_framed(status: int, headers: Headers, body: bytes, chunk_big: bool = True) -> Headers:
    """`headers` plus the content-length Go's net/http would add (none: the body goes out chunked)."""
    # Go's net/http sends no Content-Length on a 204 or 304 (they never have a body)
    if status not in (204, 304) and (not chunk_big or len(body) <= GO_CHUNK_THRESHOLD):
        return [*headers, (b"content-length", b"%d" % len(body))]
    return headers


async def respond(
    send: Send, status: int, headers: Headers, body: bytes, *, head: bool = False, chunk_big: bool = True
) -> None:
    headers = go_framed(status, headers, body, chunk_big)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def not_found(send: Send) -> None:
    await respond(send, 404, [CT_TEXT, NOSNIFF], b"404 page not found\n")


async def method_not_allowed(send: Send, allow: str | None, extra: Headers | None = None) -> None:
    headers: Headers = list(extra or ())
    if allow is not None:
        headers.insert(0, (b"allow", allow.encode()))
    headers += [CT_TEXT, NOSNIFF]
    await respond(send, 405, headers, b"Method Not Allowed\n")


async def json_message(send: Send, status: int, message: str, extra: Headers | None = None) -> None:
    """etcd's {"message": ...} error shape: no trailing newline."""
    await respond(send, status, [CT_JSON, *(extra or ())], go_json({"message": message}))


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the request body up to `limit` bytes; returns (body, truncated)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return b"".join(chunks), True
            chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks), False
