"""The ceiling for durable writes in one Python process: HTTP and a group-commit log, nothing else.

    .venv/bin/python bench/http_servers.py --servers ceiling,lean --rows v2-put-c1,v2-put-c64

Not a server anyone should run: no store, no Raft, no validation. It takes etcd's flags (only
--listen-client-urls and --data-dir matter), parses each request with httptools on uvloop, and
answers a write only after the record holding its body is fsynced (records that arrive during an
fsync share the next one; a lone write's fsync runs on the loop, as in etcdpy). Every answer is a
fixed-shape v2-style JSON. What etcdpy does per write beyond this (Raft, the WAL's framing, the
store, rendering the real answer) is the difference between its row and this one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools
import uvloop

LOG_BYTES = 64 << 20


class Log:
    """Append-only records in a preallocated file; `commit(cb)` calls cb after the fsync."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.posix_fallocate(self.fd, 0, LOG_BYTES)
        os.fsync(self.fd)
        self.offset = 0
        self.pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self.syncing = False
        self.index = 0
        self.per_sync = 1.0

    def write(self, record: bytes) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((record, fut))
        if not self.syncing:
            self.syncing = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        data = b"".join(len(r).to_bytes(4, "little") + r for r, _ in batch)
        if self.offset + len(data) > LOG_BYTES:
            self.offset = 0  # wrap: a benchmark, not a store
        os.pwrite(self.fd, data, self.offset)
        self.offset += len(data)
        self.per_sync += (len(batch) - self.per_sync) * 0.25
        if self.per_sync < 1.5 and len(batch) == 1:
            os.fdatasync(self.fd)
            self._done(batch)
        else:
            task = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self.fd)
            task.add_done_callback(lambda _: self._done(batch))

    def _done(self, batch: list[tuple[bytes, asyncio.Future[int]]]) -> None:
        for _, fut in batch:
            self.index += 1
            if not fut.done():
                fut.set_result(self.index)
        if self.pending:
            self._flush()
        else:
            self.syncing = False


class Conn(asyncio.Protocol):
    def __init__(self, log: Log) -> None:
        self.log = log
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: Any = None  # uvloop's transport; no pipelining: wrk sends one at a time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        if method == b"GET":
            self._answer(b'{"action":"get","node":{"key":"%s"}}' % url)
            return
        fut = self.log.write(url + b" " + body)
        fut.add_done_callback(
            lambda f: self._answer(b'{"action":"set","node":{"key":"%s","modifiedIndex":%d}}' % (url, f.result()))
        )

    def _answer(self, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )


async def serve(host: str, port: int, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = Log(data_dir / "ceiling.log")
    server = await asyncio.get_running_loop().create_server(lambda: Conn(log), host, port, backlog=2048)
    print(f"ceiling server on {host}:{port} since {time.time():.0f}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    flags = {a: b for a, b in itertools.pairwise(argv) if a.startswith("--") and "=" not in a}
    url = urlsplit(flags.get("--listen-client-urls", "http://127.0.0.1:2379").split(",")[0])
    data_dir = Path(flags.get("--data-dir", "ceiling.data"))
    uvloop.run(serve(url.hostname or "127.0.0.1", url.port or 2379, data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
