"""etcdpy with another HTTP server for the client port, for bench/http_servers.py only.

    ETCDPY_HTTP_SERVER=lean .venv/bin/python bench/launch_with_server.py <etcd flags>

ETCDPY_HTTP_SERVER (read here and nowhere else):
  uvicorn        app.server's uvicorn (httptools, uvloop, proxy_headers=False)
  uvicorn-tuned  the same now (it was uvicorn with proxy_headers=False when that was not the default)
  lean           app.httpserver.serve_asgi (the default start="task": a Task per request)
  lean-batch     start="batch": the first step of every request parsed in one loop turn runs
                 from one callback, a Task only once the app waits (breaks anyio/httpx, see there)
  lean-eager     start="eager": the first step runs inside data_received (same caveat)
  granian        granian's embedded server (Rust I/O threads, ASGI calls on this loop)
ETCDPY_GC=freeze  (or freeze,stats) also: gc.freeze() once the server is up and gen-0 threshold 50,000 (experiment).
ETCDPY_GC=stats   print, at exit, the time spent in the cyclic GC per generation (to stderr).

It swaps `app.server._serve_http` for the client app only (the peer port keeps the server app.cli
picks: uvicorn for the uvicorn variants, the lean server otherwise), so app/server.py is not edited.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.server as server_mod
from app import cli
from app.asgi import ClientApp
from app.httpserver import StartMode, serve_asgi

CHOICE = os.environ.get("ETCDPY_HTTP_SERVER", "uvicorn")
# app.cli accepts only its own two choices (both ports); the variants below replace the client
# port's server on top of the nearest one.
os.environ["ETCDPY_HTTP_SERVER"] = "uvicorn" if CHOICE.startswith("uvicorn") else "lean"
_real_serve_http = server_mod._serve_http


class _GranianAdapter:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._server: Any = None

    async def serve(self, sockets: list[socket.socket]) -> None:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server

        host, port = sockets[0].getsockname()[:2]
        for s in sockets:
            s.close()  # granian binds its own listener
        self._server = Server(
            self.app,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.http1,
            websockets=False,
            backlog=2048,
            log_enabled=False,
        )
        await self._server.serve()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def _serve_http(
    app: Any, socks: list[socket.socket], *, kind: str, keep_alive_s: int, max_body_bytes: int
) -> tuple[asyncio.Task[None], Callable[[], None]]:
    """app.server._serve_http, with the client port's server swapped for the chosen variant."""
    # uvicorn-tuned (proxy_headers=False) is what app.server's uvicorn does now.
    if not isinstance(app, ClientApp) or CHOICE in ("uvicorn", "uvicorn-tuned", "lean", "lean-task"):
        return _real_serve_http(app, socks, kind=kind, keep_alive_s=keep_alive_s, max_body_bytes=max_body_bytes)
    loop = asyncio.get_running_loop()
    if CHOICE in ("lean-batch", "lean-eager"):
        start: StartMode = "batch" if CHOICE == "lean-batch" else "eager"
        stop = asyncio.Event()
        task = loop.create_task(
            serve_asgi(app, socks, keep_alive_s=keep_alive_s, stop=stop, graceful_s=1, start=start)
        )
        return task, stop.set
    if CHOICE == "granian":
        adapter = _GranianAdapter(app)
        return loop.create_task(adapter.serve(socks)), adapter.stop
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
    server_mod._serve_http = _serve_http
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
