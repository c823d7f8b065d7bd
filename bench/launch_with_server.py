"""etcdpy with another HTTP server for the client port, for bench/http_servers.py only.

    ETCDPY_HTTP_SERVER=lean .venv/bin/python bench/launch_with_server.py <etcd flags>

ETCDPY_HTTP_SERVER (read here and nowhere else):
  uvicorn        app.server unchanged (httptools, uvloop, proxy headers on)
  uvicorn-tuned  uvicorn with proxy_headers=False (no ProxyHeadersMiddleware coroutine per request)
  lean           app.httpserver.serve_asgi (the default start="task": a Task per request)
  lean-batch     start="batch": the first step of every request parsed in one loop turn runs
                 from one callback, a Task only once the app waits (breaks anyio/httpx, see there)
  lean-eager     start="eager": the first step runs inside data_received (same caveat)
  granian        granian's embedded server (Rust I/O threads, ASGI calls on this loop)
ETCDPY_GC=freeze  (or freeze,stats) also: gc.freeze() once the server is up and gen-0 threshold 50,000 (experiment).
ETCDPY_GC=stats   print, at exit, the time spent in the cyclic GC per generation (to stderr).

It swaps `app.server._QuietServer` for the client app only (the peer port stays on uvicorn), so
app/server.py is not edited; the lead wires the chosen server into serve() directly.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn

import app.server as server_mod
from app import cli
from app.asgi import ClientApp
from app.httpserver import StartMode, serve_asgi

CHOICE = os.environ.get("ETCDPY_HTTP_SERVER", "uvicorn")
_RealQuiet = server_mod._QuietServer


class _LeanAdapter:
    """Looks like the uvicorn.Server that serve() drives: serve(sockets=...), should_exit."""

    def __init__(self, config: uvicorn.Config, *, start: StartMode) -> None:
        self.config = config
        self.start = start
        self._stop: asyncio.Event | None = None

    async def serve(self, sockets: list[socket.socket]) -> None:
        self._stop = asyncio.Event()
        assert isinstance(self.config.app, ClientApp)
        await serve_asgi(
            self.config.app,
            sockets,
            keep_alive_s=float(self.config.timeout_keep_alive),
            stop=self._stop,
            graceful_s=float(self.config.timeout_graceful_shutdown or 1),
            start=self.start,
        )

    @property
    def should_exit(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value and self._stop is not None:
            self._stop.set()


class _GranianAdapter:
    def __init__(self, config: uvicorn.Config) -> None:
        self.config = config
        self._server: Any = None

    async def serve(self, sockets: list[socket.socket]) -> None:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server

        host, port = sockets[0].getsockname()[:2]
        for s in sockets:
            s.close()  # granian binds its own listener
        self._server = Server(
            self.config.app,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.http1,
            websockets=False,
            backlog=2048,
            log_enabled=False,
        )
        await self._server.serve()

    @property
    def should_exit(self) -> bool:
        return False

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value and self._server is not None:
            self._server.stop()


def _server_for(config: uvicorn.Config) -> Any:
    if not isinstance(config.app, ClientApp) or CHOICE == "uvicorn":
        return _RealQuiet(config)
    if CHOICE == "uvicorn-tuned":
        config.proxy_headers = False
        return _RealQuiet(config)
    if CHOICE in ("lean", "lean-task"):
        return _LeanAdapter(config, start="task")
    if CHOICE == "lean-batch":
        return _LeanAdapter(config, start="batch")
    if CHOICE == "lean-eager":
        return _LeanAdapter(config, start="eager")
    if CHOICE == "granian":
        return _GranianAdapter(config)
    raise SystemExit(f"launch_with_server: unknown ETCDPY_HTTP_SERVER={CHOICE!r}")


def _gc_stats() -> None:
    spent = [0.0, 0.0, 0.0]
    counts = [0, 0, 0]
    t0 = [0.0]
    started = time.perf_counter()

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            t0[0] = time.perf_counter()
        else:
            gen = info["generation"]
            spent[gen] += time.perf_counter() - t0[0]
            counts[gen] += 1

    def report() -> None:
        wall = time.perf_counter() - started
        parts = ", ".join(f"gen{g}: {counts[g]} runs {spent[g]:.2f}s" for g in range(3))
        print(f"gc stats: {parts}; total {sum(spent):.2f}s of {wall:.1f}s wall", file=sys.stderr)

    gc.callbacks.append(callback)
    atexit.register(report)


def main() -> int:
    server_mod._QuietServer = _server_for  # type: ignore[misc,assignment]
    gc_opts = os.environ.get("ETCDPY_GC", "").split(",")
    if "stats" in gc_opts:
        _gc_stats()
    if "freeze" in gc_opts:
        real_start = server_mod.EtcdServer.start

        async def start_then_freeze(self: server_mod.EtcdServer) -> None:
            await real_start(self)
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)

        server_mod.EtcdServer.start = start_then_freeze  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
