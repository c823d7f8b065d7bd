"""A minimal asyncio HTTP/1.1 client for the benchmark: keep-alive requests and long-lived watches.

Only what the benchmark needs: one request at a time per connection, responses framed by
Content-Length or chunked transfer encoding, callbacks for headers and body bytes so that
thousands of watch connections cost one small object each. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

HOST = "127.0.0.1"


class ProtocolError(Exception):
    pass


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class ResponseParser:
    """Incremental response parser: `feed` bytes, get `on_headers`, `on_body`, `on_done` calls."""

    def __init__(
        self,
        on_headers: Callable[[int, dict[str, str]], None] | None = None,
        on_body: Callable[[bytes], None] | None = None,
        on_done: Callable[[], None] | None = None,
        head: bool = False,
    ) -> None:
        self.on_headers = on_headers
        self.on_body = on_body
        self.on_done = on_done
        self.head = head
        self.buf = b""
        self.state = "head"  # head | length | chunk_size | chunk_data | chunk_crlf | trailer | eof | done
        self.remaining = 0

    def _body(self, data: bytes) -> None:
        if data and self.on_body is not None:
            self.on_body(data)

    def _finish(self) -> None:
        self.state = "done"
        if self.on_done is not None:
            self.on_done()

    def eof(self) -> None:
        if self.state == "eof":
            self._finish()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf and self.state != "done":
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        raise ProtocolError("response head too large")
                    return
                head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
                lines = head.split("\r\n")
                parts = lines[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                    raise ProtocolError(f"bad status line {lines[0]!r}")
                status = int(parts[1])
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if self.on_headers is not None:
                    self.on_headers(status, headers)
                if self.head or status in (204, 304) or 100 <= status < 200:
                    self._finish()
                elif "chunked" in headers.get("transfer-encoding", "").lower():
                    self.state = "chunk_size"
                elif "content-length" in headers:
                    self.remaining = int(headers["content-length"])
                    self.state = "length"
                    if self.remaining == 0:
                        self._finish()
                else:
                    self.state = "eof"
            elif self.state == "length":
                take = self.buf[: self.remaining]
                self.buf = self.buf[len(take) :]
                self.remaining -= len(take)
                self._body(take)
                if self.remaining == 0:
                    self._finish()
            elif self.state == "chunk_size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size_line, self.buf = self.buf[:end], self.buf[end + 2 :]
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    self.state = "trailer"
                else:
                    self.remaining = size
                    self.state = "chunk_data"
            elif self.state == "chunk_data":
                take = self.buf[: self.remaining]
                self.buf = self.buf[len(take) :]
                self.remaining -= len(take)
                self._body(take)
                if self.remaining == 0:
                    self.state = "chunk_crlf"
            elif self.state == "chunk_crlf":
                if len(self.buf) < 2:
                    return
                self.buf = self.buf[2:]
                self.state = "chunk_size"
            elif self.state == "trailer":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                trailer, self.buf = self.buf[:end], self.buf[end + 2 :]
                if not trailer:
                    self._finish()
            elif self.state == "eof":
                data, self.buf = self.buf, b""
                self._body(data)


def build_request(
    method: str, path: str, port: int, body: bytes = b"", content_type: str | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
        if content_type:
            lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ClientProtocol(asyncio.Protocol):
    """One connection; `parser` is swapped per request by its owner."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            return
        try:
            self.parser.feed(data)
        except Exception as exc:
            self.error = exc
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool | None:
        if self.parser is not None:
            self.parser.eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.parser is not None:
            self.parser.eof()
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self, reset: bool = True) -> None:
        """Close; with `reset` an RST (SO_LINGER 0) so that thousands of closes leave no TIME_WAIT."""
        if self.transport is None or self.transport.is_closing():
            return
        if reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self.transport.close()


async def connect(port: int) -> ClientProtocol:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(ClientProtocol, HOST, port)
    return proto


class Conn:
    """A keep-alive connection for sequential requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proto: ClientProtocol | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
        timeout: float = 10.0,
    ) -> Response:
        if self.proto is None or self.proto.lost.done():
            self.proto = await asyncio.wait_for(connect(self.port), timeout)
        proto = self.proto
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        resp = Response()
        chunks: list[bytes] = []

        def on_headers(status: int, headers: dict[str, str]) -> None:
            resp.status = status
            resp.headers = headers

        def on_done() -> None:
            if not done.done():
                done.set_result(None)

        proto.parser = ResponseParser(on_headers, chunks.append, on_done, head=method == "HEAD")
        proto.send(build_request(method, path, self.port, body, content_type))
        lost = proto.lost
        try:
            await asyncio.wait_for(asyncio.wait([done, lost], return_when=asyncio.FIRST_COMPLETED), timeout)
        except TimeoutError:
            self.close()
            raise
        if not done.done():
            self.proto = None
            raise ProtocolError(f"connection lost during {method} {path}: {proto.error}")
        resp.body = b"".join(chunks)
        if resp.headers.get("connection", "").lower() == "close":
            self.close()
        return resp

    def close(self) -> None:
        if self.proto is not None:
            self.proto.close(reset=False)
            self.proto = None


async def request_once(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str | None = None,
    timeout: float = 5.0,
) -> Response:
    conn = Conn(port)
    try:
        return await conn.request(method, path, body, content_type, timeout)
    finally:
        conn.close()


async def put_many(
    port: int, paths: list[str], body: bytes, content_type: str, connections: int = 64, timeout: float = 600.0
) -> int:
    """PUT `body` to every path over `connections` concurrent keep-alive connections; the number of
    2xx answers. Bounded by `timeout` seconds overall."""
    ok = 0

    async def worker(mine: list[str]) -> None:
        nonlocal ok
        conn = Conn(port)
        try:
            for path in mine:
                r = await conn.request("PUT", path, body, content_type, timeout=30)
                if 200 <= r.status < 300:
                    ok += 1
        finally:
            conn.close()

    await asyncio.wait_for(
        asyncio.gather(*(worker(paths[i::connections]) for i in range(connections))), timeout
    )
    return ok
