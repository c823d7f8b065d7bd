"""Fixtures for the v3 gateway API tests: a one-member server with the v3 backend, reached
through httpx.ASGITransport (unary) or uvicorn on 127.0.0.1:21600-21699 (streams).

EtcdServer inherits V3BackendMixin and runs the lease expiry loop itself.
"""

from __future__ import annotations

import base64
import contextlib

import httpx

from app.asgi import ClientApp
from app.server import EtcdServer
from tests.api.conftest import CLIENT_URL, make_app, running_server, serve_uvicorn

PORTS = range(21600, 21700)


V3Server = EtcdServer


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


# The one-member server and uvicorn helpers are tests/api/conftest.py's; streams use their own ports.
running_v3_server = running_server


def make_v3_app(srv: V3Server) -> ClientApp:
    return make_app(srv)


def serve(srv: V3Server) -> contextlib.AbstractAsyncContextManager[str]:
    return serve_uvicorn(make_v3_app(srv), PORTS, on_exit=srv.close_v3_streams)


def asgi_client(srv: V3Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_v3_app(srv)), base_url=CLIENT_URL)
