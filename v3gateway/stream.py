"""Server-side halves of a grpc-gateway stream: the request body as a sequence of JSON
messages (json.Decoder over a possibly chunked upload), and the `{"result":...}\\n` writer.

Invariants: response headers go out with the first message (as the gateway waits for the gRPC
header, which etcd sends with its first message); each message is one ASGI body message, i.e.
one HTTP chunk; an error ends the stream with grpc-gateway's stream error object. Must not
import app or raft.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from v3gateway import codec, gojson
from v3gateway.codec import MessageType, Obj, dumps
from v3gateway.errors import GrpcError, http_status, stream_error_body
from v3gateway.http import CT_JSON, GRPC_METADATA, Headers, Receive, Send


class RequestStream:
    """Successive request messages from the body. Go's json.Decoder semantics: values may be
    back to back or separated by whitespace; a value split across chunks waits for the rest."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._buf = b""
        self._pos = 0
        self.body_done = False
        self.disconnected = False

    async def _fill(self) -> None:
        msg = await self._receive()
        if msg["type"] == "http.disconnect":
            self.disconnected = True
            self.body_done = True
            return
        if self._pos:
            self._buf = self._buf[self._pos :]
            self._pos = 0
        self._buf += msg.get("body", b"")
        if not msg.get("more_body", False):
            self.body_done = True

    async def next(self, mt: MessageType) -> dict[str, Any] | None:
        """The next message, or None at the end of the body (or on disconnect).
        Raises GoJSONError for a malformed message."""
        while True:
            raw, end = gojson.decode_first(self._buf, self._pos, eof=self.body_done)
            if raw is not None:
                self._pos = end
                return codec.decode_message(mt, raw)
            if self.body_done:
                return None
            await self._fill()

    async def wait_disconnect(self) -> None:
        """After the body: block until the client goes away."""
        while not self.disconnected:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                self.disconnected = True


class ResponseStream:
    def __init__(self, send: Send, extra_headers: Callable[[], Headers]) -> None:
        self._send = send
        self._extra = extra_headers
        self.started = False
        self.ended = False

    async def _start(self, status: int, grpc_metadata: bool) -> None:
        headers: Headers = [CT_JSON]
        if grpc_metadata:
            headers.append(GRPC_METADATA)
        headers += self._extra()
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        self.started = True

    async def result(self, obj: Obj) -> None:
        if not self.started:
            await self._start(200, True)
        await self._send(
            {"type": "http.response.body", "body": dumps({"result": obj}) + b"\n", "more_body": True}
        )

    async def decode_error(self, message: str) -> None:
        """The first request message did not decode: the gateway answers 500, code 2 (Unknown),
        as a plain (non-stream) error."""
        body = dumps({"error": message, "message": message, "code": 2})
        await self._send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [CT_JSON, *self._extra(), (b"content-length", str(len(body)).encode())],
            }
        )
        await self._send({"type": "http.response.body", "body": body})
        self.started = self.ended = True

    async def error(self, err: GrpcError) -> None:
        """grpc-gateway handleForwardResponseStreamError; ends the stream."""
        if not self.started:
            await self._start(http_status(err.code), False)
        await self._send({"type": "http.response.body", "body": stream_error_body(err), "more_body": True})
        await self.end()

    async def end(self) -> None:
        """The gRPC stream ended normally (for a stream that never sent anything: an empty 200)."""
        if self.ended:
            return
        if not self.started:
            await self._start(200, True)
        self.ended = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
