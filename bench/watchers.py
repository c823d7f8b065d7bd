"""v2 watch loads: long-poll fan-out (N waiting watchers, one PUT) and stream watchers (N x M events)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from httpc import ClientProtocol, Conn, ResponseParser, build_request, connect

FORM = "application/x-www-form-urlencoded"
TOKEN = b'"action"'  # once per v2 event object


class Watcher:
    """One watch connection: `registered` when the response head arrives (both servers flush
    it at once), then counts events in the body; `done_at` when `want` events have arrived."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.events = 0
        self.tail = b""
        self.status = 0
        self.registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.finished: asyncio.Future[None] | None = None
        self.done_at = 0.0
        self.proto: ClientProtocol | None = None

    def on_headers(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        if not self.registered.done():
            self.registered.set_result(None)

    def on_body(self, data: bytes) -> None:
        buf = self.tail + data
        self.events += buf.count(TOKEN)
        # keep a tail shorter than the token, so a token split across reads is counted once
        self.tail = buf[-(len(TOKEN) - 1) :]
        if self.events >= self.want and not self.done_at:
            self.done_at = time.perf_counter()
            if self.finished is not None and not self.finished.done():
                self.finished.set_result(None)

    def on_done(self) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def open(self, port: int, path: str, finished: asyncio.Future[None]) -> None:
        self.finished = finished
        proto = await connect(port)
        self.proto = proto
        proto.parser = ResponseParser(self.on_headers, self.on_body, self.on_done)
        proto.send(build_request("GET", path, port))
        await self.registered

    def close(self) -> None:
        if self.proto is not None:
            self.proto.close(reset=True)


@dataclass
class WatchResult:
    n: int
    registered_s: float  # time to open and register all watchers
    all_notified_ms: float  # from sending the write(s) until the last watcher had every event
    missed: int  # events expected minus events received (0 when all arrived)
    failed: int  # watchers whose connection failed or answered non-200


async def _open_all(
    port: int, path: str, n: int, want: int, parallel: int, timeout: float
) -> tuple[list[Watcher], list[asyncio.Future[None]]]:
    loop = asyncio.get_running_loop()
    watchers = [Watcher(want) for _ in range(n)]
    finished = [loop.create_future() for _ in range(n)]
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with sem:
            await watchers[i].open(port, path, finished[i])

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout)
    return watchers, finished


async def _wait_all(finished: list[asyncio.Future[None]], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*finished), timeout)


async def long_poll_fanout(
    port: int,
    key: str,
    n: int,
    rss: Callable[[], int],
    timeout: float = 60.0,
    parallel: int = 200,
) -> tuple[WatchResult, int, int]:
    """N watchers wait on `key`; one PUT; time until every watcher has its event.
    Returns the result and the server RSS before the watchers and while they wait."""
    writer = Conn(port)
    r = await writer.request("GET", "/v2/keys/")  # connect the writer before the watchers
    await asyncio.sleep(0.3)
    rss_before = rss()
    t0 = time.perf_counter()
    watchers, finished = await _open_all(port, f"/v2/keys{key}?wait=true", n, 1, parallel, timeout)
    registered_s = time.perf_counter() - t0
    try:
        await asyncio.sleep(0.5)
        rss_waiting = rss()
        t_put = time.perf_counter()
        r = await writer.request("PUT", f"/v2/keys{key}", b"value=fanout", FORM, timeout)
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {key}: {r.status} {r.body[:200]!r}")
        await _wait_all(finished, timeout)
        got = [w for w in watchers if w.done_at]
        last = max((w.done_at for w in got), default=time.perf_counter())
        failed = sum(1 for w in watchers if w.status != 200)
        return (
            WatchResult(n, registered_s, (last - t_put) * 1000, n - len(got), failed),
            rss_before,
            rss_waiting,
        )
    finally:
        for w in watchers:
            w.close()
        writer.close()


async def stream_watchers(
    port: int,
    key: str,
    n: int,
    events: int,
    timeout: float = 60.0,
    parallel: int = 200,
) -> WatchResult:
    """N stream watchers on `key`; `events` sequential PUTs; count the events each receives."""
    writer = Conn(port)
    await writer.request("GET", "/v2/keys/")
    t0 = time.perf_counter()
    watchers, finished = await _open_all(
        port, f"/v2/keys{key}?wait=true&stream=true", n, events, parallel, timeout
    )
    registered_s = time.perf_counter() - t0
    try:
        await asyncio.sleep(0.3)
        t_put = time.perf_counter()
        for i in range(events):
            r = await writer.request("PUT", f"/v2/keys{key}", f"value=e{i}".encode(), FORM, timeout)
            if r.status not in (200, 201):
                raise RuntimeError(f"PUT {key}: {r.status} {r.body[:200]!r}")
        await _wait_all(finished, min(timeout, 15.0))  # events lost do not come later
        got = [w for w in watchers if w.done_at]
        last = max((w.done_at for w in got), default=time.perf_counter())
        received = sum(min(w.events, events) for w in watchers)
        failed = sum(1 for w in watchers if w.status != 200)
        return WatchResult(n, registered_s, (last - t_put) * 1000, n * events - received, failed)
    finally:
        for w in watchers:
            w.close()
        writer.close()
