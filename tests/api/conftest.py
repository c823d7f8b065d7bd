"""In-process API fixtures: a one-member EtcdServer on a tmp data dir, inside the test's loop.

`client` talks to ClientApp through httpx.ASGITransport (buffers whole bodies, so it cannot see
watches in flight); `live` serves the same app with uvicorn on 127.0.0.1 (ports 21500-21599) for
long-poll and stream watches. Every server and task is stopped when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.asgi import ClientApp
from app.config import Config
from app.server import EtcdServer

PORTS = range(21500, 21600)
CLIENT_URL = "http://127.0.0.1:2379"
PEER_URL = "http://127.0.0.1:2380"
READY_TIMEOUT_S = 10.0


def config_fields(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "default",
        "data_dir": str(data_dir),
        "wal_dir": "",
        "initial_cluster": (("default", PEER_URL),),
        "listen_peer_urls": (PEER_URL,),
        "initial_advertise_peer_urls": (PEER_URL,),
        "initial_cluster_token": "etcd-cluster",
        "heartbeat_interval_ms": 100,
        "election_timeout_ms": 1000,
        "unsafe_no_fsync": True,
        "snapshot_count": 100_000,
        "max_snapshots": 5,
        "max_wals": 5,
        "listen_client_urls": (CLIENT_URL,),
        "advertise_client_urls": (CLIENT_URL,),
        "cors": ("*",),
        "enable_v2": True,
        "log_level": "warn",
    }
    fields.update(overrides)
    return fields


def make_config(data_dir: Path, **overrides: Any) -> Config:
    return Config(**config_fields(data_dir, **overrides))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any) -> AsyncIterator[EtcdServer]:
    srv = EtcdServer(make_config(data_dir, **overrides))
    srv.open()
    await srv.start()
    try:
        with anyio_fail_after(READY_TIMEOUT_S):
            while not srv.published:
                await asyncio.sleep(0.01)
        yield srv
    finally:
        srv.close_v3_streams()
        await srv.stop()


@contextlib.contextmanager
def anyio_fail_after(seconds: float) -> Any:
    import anyio

    with anyio.fail_after(seconds):
        yield


def make_app(srv: EtcdServer, **kw: Any) -> ClientApp:
    opts: dict[str, Any] = {"cors": ("*",), "enable_v2": True, "client_urls": (CLIENT_URL,)}
    opts.update(kw)
    return ClientApp(srv, **opts)


def asgi_client(app: ClientApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=CLIENT_URL)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EtcdServer]:
    async with running_server(tmp_path / "data") as srv:
        yield srv


@pytest.fixture
async def client(server: EtcdServer) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app(server)) as c:
        yield c


def free_port(ports: range = PORTS) -> int:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


@dataclass
class Live:
    server: EtcdServer
    url: str


@contextlib.asynccontextmanager
async def serve_uvicorn(
    app: ClientApp, ports: range = PORTS, on_exit: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """Serve `app` on loopback with uvicorn; `on_exit` runs before the shutdown (ends streams)."""
    import uvicorn

    port = free_port(ports)
    userver = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.get_running_loop().create_task(userver.serve())
    try:
        with anyio_fail_after(READY_TIMEOUT_S):
            while not userver.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        if on_exit is not None:
            on_exit()
        userver.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@pytest.fixture
async def live(server: EtcdServer) -> AsyncIterator[Live]:
    async with serve_uvicorn(make_app(server)) as url:
        try:
            yield Live(server, url)
        finally:
            server.close_watchers()  # open watches would hold the graceful shutdown
