"""Long-poll and stream watches over real HTTP (uvicorn on 127.0.0.1): ASGITransport buffers
whole bodies, so these need a socket. Every response is read with a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import httpx
import orjson
import pytest

from tests.api.conftest import Live

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BOUND_S = 10.0


async def eventually(pred: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(BOUND_S):
        while not pred():
            await asyncio.sleep(0.01)
    assert pred(), what


async def test_long_poll_headers_arrive_before_the_event(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        async with c.stream("GET", "/v2/keys/lp?wait=true") as r:
            assert r.status_code == 200
            assert r.headers["x-etcd-index"] == "3"
            assert r.headers["content-type"] == "application/json"
            assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
            assert "x-raft-index" in r.headers and "x-raft-term" in r.headers
            assert live.server.v2.hub.count == 1
            put = await c.put("/v2/keys/lp?value=1")
            assert put.status_code == 201
            with anyio.fail_after(BOUND_S):
                data = await r.aread()
        assert (
            data
            == orjson.dumps(
                {"action": "set", "node": {"key": "/lp", "value": "1", "modifiedIndex": 4, "createdIndex": 4}}
            )
            + b"\n"
        )
        assert live.server.v2.hub.count == 0


async def test_stream_delivers_one_event_per_line_and_stays_open(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        async with c.stream("GET", "/v2/keys/st?wait=true&stream=true&recursive=true") as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            for i in range(3):
                await c.put(f"/v2/keys/st/k{i}?value={i}")
                with anyio.fail_after(BOUND_S):
                    line = await lines.__anext__()
                e = orjson.loads(line)
                assert (e["action"], e["node"]["key"], e["node"]["value"]) == ("set", f"/st/k{i}", str(i))
            assert live.server.v2.hub.count == 1  # still registered after three events
            await c.put("/v2/keys/other?value=x")
            await c.delete("/v2/keys/st/k0")
            with anyio.fail_after(BOUND_S):
                line = await lines.__anext__()
            assert orjson.loads(line)["action"] == "delete"


async def test_stream_on_deleted_key_sees_the_event_twice(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        await c.put("/v2/keys/dup?value=1")
        async with c.stream("GET", "/v2/keys/dup?wait=true&stream=true") as r:
            await c.delete("/v2/keys/dup")
            lines = r.aiter_lines()
            with anyio.fail_after(BOUND_S):
                first, second = await lines.__anext__(), await lines.__anext__()
            assert first == second and orjson.loads(first)["action"] == "delete"


async def test_client_disconnect_frees_the_watcher(live: Live) -> None:
    hub = live.server.v2.hub
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        for query in ("wait=true", "wait=true&stream=true"):
            async with c.stream("GET", f"/v2/keys/gone?{query}") as r:
                assert r.status_code == 200
                await eventually(lambda: hub.count == 1, "watcher registered")
            await eventually(lambda: hub.count == 0, "watcher freed after disconnect")


async def test_history_answer_in_stream_mode_then_live_events(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        await c.put("/v2/keys/h?value=old")
        async with c.stream("GET", "/v2/keys/h?wait=true&stream=true&waitIndex=4") as r:
            assert r.headers["x-etcd-index"] == "4"
            lines = r.aiter_lines()
            with anyio.fail_after(BOUND_S):
                assert orjson.loads(await lines.__anext__())["node"]["value"] == "old"


async def test_watch_on_cleared_history_is_401_with_http_400(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
        # 1000 retained events: push the window past index 1 with cheap internal-size writes
        for i in range(1000):
            r = await c.put(f"/v2/keys/c?value={i}")
        assert r.headers["x-etcd-index"] == "1003"
        r = await c.get("/v2/keys/c?wait=true&waitIndex=3")
        assert r.status_code == 400
        assert r.json() == {
            "errorCode": 401,
            "message": "The event in requested index is outdated and cleared",
            "cause": "the requested history has been cleared [4/3]",
            "index": 1003,
        }
        assert r.headers["x-etcd-index"] == "1003" and "x-raft-index" not in r.headers


async def raw_long_poll(host: str, port: int, target: str) -> tuple[bytes, bytes]:
    """One HTTP/1.1 GET on its own connection (httpx is too slow to open 500 at once);
    returns (head, de-chunked body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return head, body


async def test_500_long_poll_watchers_all_get_one_put(live: Live) -> None:
    n = 500
    hub = live.server.v2.hub
    url = httpx.URL(live.url)
    assert url.port is not None
    targets = ["/v2/keys/hot?wait=true", "/v2/keys/?wait=true&recursive=true"]
    tasks = [asyncio.ensure_future(raw_long_poll(url.host, url.port, targets[i % 2])) for i in range(n)]
    try:
        await eventually(lambda: hub.count == n, f"{n} watchers registered")
        async with httpx.AsyncClient(base_url=live.url, timeout=BOUND_S) as c:
            put = await c.put("/v2/keys/hot?value=x")
        assert put.status_code == 201
        with anyio.fail_after(30):
            answers = await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert all(head.startswith(b"HTTP/1.1 200 ") for head, _ in answers)
    assert {body for _, body in answers} == {put.content}
    assert hub.count == 0
