"""Fixtures for the v3 gateway API tests: a one-member server with the v3 backend, reached
through httpx.ASGITransport (unary) or uvicorn on 127.0.0.1:21600-21699 (streams).

EtcdServer inherits V3BackendMixin and runs the lease expiry loop itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app.asgi import ClientApp
from app.server import EtcdServer
from tests.api.conftest import CLIENT_URL, READY_TIMEOUT_S, anyio_fail_after, make_config

PORTS = range(21600, 21700)


V3Server = EtcdServer


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


@contextlib.asynccontextmanager
async def running_v3_server(data_dir: Path, **overrides: Any) -> AsyncIterator[V3Server]:
    srv = V3Server(make_config(data_dir, **overrides))
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


def make_v3_app(srv: V3Server) -> ClientApp:
    return ClientApp(srv, cors=("*",), enable_v2=True, client_urls=(CLIENT_URL,))


def free_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 21600-21699")


@contextlib.asynccontextmanager
async def serve(srv: V3Server) -> AsyncIterator[str]:
    port = free_port()
    userver = uvicorn.Server(
        uvicorn.Config(
            make_v3_app(srv),
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
        srv.close_v3_streams()
        userver.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def asgi_client(srv: V3Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_v3_app(srv)), base_url=CLIENT_URL)
