"""v3 streams over real HTTP (uvicorn on 127.0.0.1:21600-21699): watch, lease keepalive and
snapshot. ASGITransport buffers whole bodies, so these need a socket. Every read is bounded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.api.v3_fixtures import V3Server, b64, running_v3_server, serve

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BOUND_S = 10.0


@dataclass
class Live:
    srv: V3Server
    c: httpx.AsyncClient


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with running_v3_server(tmp_path / "data") as srv, serve(srv) as url:
        async with httpx.AsyncClient(base_url=url, timeout=BOUND_S) as c:
            yield Live(srv, c)


async def next_result(lines: Any) -> dict[str, Any]:
    with anyio.fail_after(BOUND_S):
        line = await lines.__anext__()
    out: dict[str, Any] = json.loads(line)["result"]
    return out


async def put(c: httpx.AsyncClient, key: str, value: str, **kw: Any) -> dict[str, Any]:
    r = await c.post("/v3/kv/put", json={"key": b64(key), "value": b64(value), **kw})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def eventually_no_watchers(srv: V3Server) -> None:
    with anyio.fail_after(BOUND_S):
        while len(srv.applier.v3.watchers):
            await asyncio.sleep(0.01)


async def test_watch_history_batch_then_live_events_and_cleanup(live: Live) -> None:
    c, srv = live.c, live.srv
    await put(c, "w/a", "0")
    await put(c, "w/a", "1")
    body = json.dumps({"create_request": {"key": b64("w/a"), "start_revision": "2", "prev_kv": True}})
    async with c.stream("POST", "/v3/watch", content=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.headers["grpc-metadata-content-type"] == "application/grpc"
        assert r.headers["transfer-encoding"] == "chunked"
        lines = r.aiter_lines()
        created = await next_result(lines)
        assert created == {"header": {**created["header"], "revision": "3"}, "created": True}
        history = await next_result(lines)
        assert history["header"]["revision"] == "3"
        assert [e["kv"]["mod_revision"] for e in history["events"]] == ["2", "3"]
        assert "prev_kv" not in history["events"][0]  # a creation has no prev_kv
        assert history["events"][1]["prev_kv"]["value"] == b64("0")
        await c.post("/v3/kv/deleterange", json={"key": b64("w/a")})
        ev = await next_result(lines)
        assert ev["header"]["revision"] == "4"
        assert ev["events"] == [
            {
                "type": "DELETE",
                "kv": {"key": b64("w/a"), "mod_revision": "4"},
                "prev_kv": {
                    "key": b64("w/a"),
                    "create_revision": "2",
                    "mod_revision": "3",
                    "version": "2",
                    "value": b64("1"),
                },
            }
        ]
        assert len(srv.applier.v3.watchers) == 1
    await eventually_no_watchers(srv)  # the client went away: its watcher is cancelled


async def test_prefix_watch_gets_a_txn_in_one_message(live: Live) -> None:
    c = live.c
    body = json.dumps({"create_request": {"key": b64("wp/"), "range_end": b64("wp0")}})
    async with c.stream("POST", "/v3/watch", content=body) as r:
        lines = r.aiter_lines()
        await next_result(lines)
        await c.post(
            "/v3/kv/txn",
            json={"success": [{"request_put": {"key": b64(f"wp/{k}"), "value": b64("1")}} for k in "xy"]},
        )
        ev = await next_result(lines)
        assert [e["kv"]["key"] for e in ev["events"]] == [b64("wp/x"), b64("wp/y")]
    await eventually_no_watchers(live.srv)


async def test_control_requests_on_a_streamed_body(live: Live) -> None:
    c = live.c
    await put(c, "wc/a", "0")

    async def body() -> AsyncIterator[bytes]:
        # httpx sends the whole (chunked) body before it reads the answer; the parts still
        # arrive as separate chunks, which the gateway decodes as separate requests.
        yield json.dumps({"create_request": {"key": b64("wc/a"), "filters": ["NOPUT"]}}).encode()
        yield b'{"progress_request":{}}'
        yield json.dumps({"create_request": {"key": b64("wc/b"), "watch_id": "9"}}).encode()
        yield json.dumps({"create_request": {"key": b64("wc/c"), "watch_id": "9"}}).encode()
        yield b'{"cancel_request":{"watch_id":"0"}}{"cancel_re'
        yield b'quest":{"watch_id":"12345"}}'

    async with c.stream("POST", "/v3/watch", content=body()) as r:
        lines = r.aiter_lines()
        got = [await next_result(lines) for _ in range(5)]
        assert got[0].get("created") and "watch_id" not in got[0]
        assert got[1]["watch_id"] == "-1" and set(got[1]) == {"header", "watch_id"}
        assert got[2]["watch_id"] == "9" and got[2]["created"]
        assert got[3] == {
            "header": got[3]["header"],
            "watch_id": "-1",
            "created": True,
            "canceled": True,
            "cancel_reason": "mvcc: duplicate watch ID provided on the WatchStream",
        }
        assert got[4] == {"header": got[4]["header"], "canceled": True}
        await put(c, "wc/b", "1")
        ev = await next_result(lines)
        assert ev["watch_id"] == "9" and ev["events"][0]["kv"]["key"] == b64("wc/b")
        # the end of the request body does not end the watch
        await put(c, "wc/b", "2")
        ev = await next_result(lines)
        assert ev["events"][0]["kv"]["value"] == b64("2")
    await eventually_no_watchers(live.srv)


async def test_watch_from_a_compacted_revision_is_canceled(live: Live) -> None:
    c = live.c
    for v in "123":
        await put(c, "wk/a", v)
    assert (await c.post("/v3/kv/compaction", json={"revision": 3})).status_code == 200
    body = json.dumps({"create_request": {"key": b64("wk/a"), "start_revision": 2}})
    async with c.stream("POST", "/v3/watch", content=body) as r:
        lines = r.aiter_lines()
        assert (await next_result(lines))["created"]
        canceled = await next_result(lines)
        assert canceled["canceled"] is True and canceled["compact_revision"] == "3"
        assert "revision" not in canceled["header"]
    await eventually_no_watchers(live.srv)


async def test_watch_without_a_message_sends_no_headers(live: Live) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await live.c.post("/v3/watch", content=b"{}", timeout=0.5)
    r = await live.c.post("/v3/watch", content=b"not json")
    assert r.status_code == 500
    assert r.json() == {
        "error": "invalid character 'o' in literal null (expecting 'u')",
        "message": "invalid character 'o' in literal null (expecting 'u')",
        "code": 2,
    }


async def test_lease_expiry_is_a_delete_event(live: Live) -> None:
    c = live.c
    lease = (await c.post("/v3/lease/grant", json={"TTL": 2})).json()["ID"]
    await put(c, "le/a", "1", lease=lease)
    body = json.dumps({"create_request": {"key": b64("le/a"), "prev_kv": True}})
    async with c.stream("POST", "/v3/watch", content=body) as r:
        lines = r.aiter_lines()
        await next_result(lines)
        ev = await next_result(lines)
        assert ev["events"][0]["type"] == "DELETE"
        assert ev["events"][0]["prev_kv"]["lease"] == lease
    r = await c.post("/v3/lease/timetolive", json={"ID": lease})
    assert r.json()["TTL"] == "-1"


async def test_keepalive_answers_each_request_then_ends(live: Live) -> None:
    c = live.c
    lease = (await c.post("/v3/lease/grant", json={"TTL": 30})).json()["ID"]
    r = await c.post("/v3/lease/keepalive", content=json.dumps({"ID": lease}) + ' {"ID":"5"}')
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    lines = [json.loads(x)["result"] for x in r.text.splitlines()]
    assert [(x["ID"], x.get("TTL")) for x in lines] == [(lease, "30"), ("5", None)]
    assert r.text.endswith("\n")


async def test_snapshot_stream_ends_with_the_sha256(live: Live) -> None:
    c = live.c
    await put(c, "s/a", "x" * 70000)
    r = await c.post("/v3/maintenance/snapshot", content=b"{}")
    assert r.status_code == 200
    results = [json.loads(x)["result"] for x in r.text.splitlines()]
    blobs = [base64.b64decode(x["blob"]) for x in results]
    assert all(len(b) == 32 * 1024 for b in blobs[:-2])
    assert hashlib.sha256(b"".join(blobs[:-1])).digest() == blobs[-1]
    remaining = [int(x.get("remaining_bytes", "0")) for x in results]
    assert remaining[-2:] == [0, 0] and remaining[0] == sum(len(b) for b in blobs[1:-1])


async def test_watch_requests_interleave_with_answers(live: Live) -> None:
    """A real bidirectional exchange on one connection (raw socket: chunked upload while the
    answer streams), then a disconnect that must cancel the watcher."""
    url = httpx.URL(str(live.c.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def read_chunk() -> bytes:
        with anyio.fail_after(BOUND_S):
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
        return data[:-2]

    try:
        writer.write(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunk(json.dumps({"create_request": {"key": b64("wi/a")}}).encode()))
        await writer.drain()
        with anyio.fail_after(BOUND_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        assert json.loads(await read_chunk())["result"]["created"] is True
        await put(live.c, "wi/a", "1")
        assert json.loads(await read_chunk())["result"]["events"][0]["kv"]["value"] == b64("1")
        writer.write(chunk(b'{"cancel_request":{}}'))
        await writer.drain()
        assert json.loads(await read_chunk())["result"]["canceled"] is True
        assert len(live.srv.applier.v3.watchers) == 0
        writer.write(chunk(json.dumps({"create_request": {"key": b64("wi/b")}}).encode()))
        await writer.drain()
        assert json.loads(await read_chunk())["result"]["watch_id"] == "1"
        assert len(live.srv.applier.v3.watchers) == 1
    finally:
        writer.close()
    await eventually_no_watchers(live.srv)


async def test_fragment_splits_a_large_catch_up_as_etcd_sends_fragments(tmp_path: Path) -> None:
    # etcd splits at max-request-bytes + 512 KiB; with --max-request-bytes 4096, 600 events of
    # ~1 KiB come out of etcd 3.4.23 as a fragment of 515 events and a last part of 85.
    async with running_v3_server(tmp_path / "frag", max_request_bytes=4096) as srv, serve(srv) as url:
        async with httpx.AsyncClient(base_url=url, timeout=BOUND_S) as c:
            for i in range(600):
                await put(c, f"f/{i:04d}", "x" * 1000)
            for fragment in (True, False):
                create = {
                    "key": b64("f/"),
                    "range_end": b64("f0"),
                    "start_revision": "2",
                    "fragment": fragment,
                }
                async with c.stream("POST", "/v3/watch", content=json.dumps({"create_request": create})) as r:
                    lines = r.aiter_lines()
                    assert (await next_result(lines))["created"] is True
                    parts = [await next_result(lines)]
                    while parts[-1].get("fragment"):
                        parts.append(await next_result(lines))
                keys = [e["kv"]["key"] for p in parts for e in p["events"]]
                assert keys == [b64(f"f/{i:04d}") for i in range(600)]  # nothing lost, in order
                if fragment:
                    assert [len(p["events"]) for p in parts] == [515, 85]
                    assert list(parts[0]) == ["header", "fragment", "events"]  # proto field order
                    assert "fragment" not in parts[-1]
                else:
                    assert len(parts) == 1
