"""ClientApp.fast_response (the task-free answers app/httpserver.py gives plain GETs and writes)
against the ASGI path: the same status, headers and body for every request it takes, the general
path for every request it declines, fresh answers after writes, and the same stats."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from app.asgi import ClientApp
from app.server import EtcdServer
from store.later import Later
from tests.api.conftest import make_app, running_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def asgi_answer(app: ClientApp, method: str, target: str, body: bytes = b"") -> Answer:
    """The answer the ASGI path gives, as the server would frame it (status, headers, whole body)."""
    parts = urlsplit(target)
    headers = [(b"host", b"127.0.0.1:2379")]
    if body:
        headers += [(b"content-type", b"application/x-www-form-urlencoded")]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2379),
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def settled(pending: object) -> Answer:
    """The answer a fast write's Later gets (its callback runs in the apply loop), within 5 s."""
    assert isinstance(pending, Later), pending
    waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    pending.add_done_callback(lambda later: waiter.set_result(later.result()))
    return await asyncio.wait_for(waiter, 5)


def fast(app: ClientApp, target: str) -> Answer | None:
    parts = urlsplit(target)
    answer = app.fast_response("GET", parts.path.encode(), parts.query.encode(), [], b"")
    assert not isinstance(answer, asyncio.Future)
    return answer


def same_but_expiry(a: Answer, b: Answer) -> bool:
    """Equal answers, but for the expiration instants (each member computed its own, and
    Go trims their trailing zeros, so the lengths may differ too)."""

    def norm(x: Answer) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, headers, body = x
        length = dict(headers).get(b"content-length")
        assert length is None or int(length) == len(body)
        kept = [(n, v) for n, v in headers if n != b"content-length" or b'"expiration"' not in body]
        return status, kept, re.sub(rb'"expiration":"[^"]+"', b"", body)

    return norm(a) == norm(b)


async def put(app: ClientApp, key: str, form: str) -> None:
    status, _, body = await asgi_answer(app, "PUT", f"/v2/keys{key}", form.encode())
    assert status in (200, 201), body


TAKEN = [
    "/v2/keys/a",
    "/v2/keys/a?recursive=true",
    "/v2/keys/dir",
    "/v2/keys/dir?recursive=true&sorted=true",
    "/v2/keys/dir/sub?sorted=false",
    "/v2/keys",
    "/v2/keys/",
    "/v2/keys/_hidden",
    "/v2/keys/big",
    "/v2/keys/nokey",
    "/v2/keys/a/below-a-file",
    "/v2/keys/ttl",
    "/v2/keys/dir?recursive=true",  # holds a TTL below
]
DECLINED = [
    "/v2/keys/a?wait=true&stream=true",
    "/v2/keys/a?quorum=true",
    "/v2/keys/a?recursive=maybe",
    "/v2/keys/a?prevValue=",
    "/v2/keys//a",
    "/v2/keys/./a",
    "/v2/keys/%61",
    "/v2/keysa",
    "/v2/machines",
    "/version",
]


async def fill(app: ClientApp) -> None:
    await put(app, "/a", "value=1")
    await put(app, "/dir/x", "value=x")
    await put(app, "/dir/sub/y", "value=y")
    await put(app, "/dir/z", "value=z&ttl=100")
    await put(app, "/_hidden", "value=h")
    await put(app, "/big", "value=" + "v" * 3000)  # an answer over 2 KiB goes out chunked
    await put(app, "/ttl", "value=t&ttl=100")


@pytest.mark.parametrize("cors", [("*",), ()])
async def test_fast_answers_equal_the_asgi_answers(server: EtcdServer, cors: tuple[str, ...]) -> None:
    app = make_app(server, cors=cors)
    await fill(app)
    for target in TAKEN:
        for _ in range(2):  # the second one may come from the answer cache
            got = fast(app, target)
            assert got is not None, target
            assert got == await asgi_answer(app, "GET", target), target
    for target in DECLINED:
        assert fast(app, target) is None, target
    _, headers, body = await asgi_answer(app, "GET", "/v2/keys/big")
    assert len(body) > 3000 and b"content-length" not in dict(headers)  # the server chunks it


async def test_specific_cors_origins_take_the_general_path(server: EtcdServer) -> None:
    app = make_app(server, cors=("http://dash.example",))
    await fill(app)
    assert fast(app, "/v2/keys/a") is None


async def test_v2_disabled_takes_the_general_path(server: EtcdServer) -> None:
    app = make_app(server, enable_v2=False)
    assert fast(app, "/v2/keys/a") is None


async def test_answers_follow_writes_and_ttls(server: EtcdServer) -> None:
    app = make_app(server)
    await put(app, "/a", "value=1")
    first = fast(app, "/v2/keys/a")
    assert first is not None and orjson.loads(first[2])["node"]["value"] == "1"
    await put(app, "/a", "value=2")
    second = fast(app, "/v2/keys/a")
    assert second is not None and orjson.loads(second[2])["node"]["value"] == "2"
    assert dict(second[1])[b"x-etcd-index"] > dict(first[1])[b"x-etcd-index"]
    # a write elsewhere moves the indexes this answer shows
    await put(app, "/other", "value=o")
    third = fast(app, "/v2/keys/a")
    assert third is not None and dict(third[1])[b"x-etcd-index"] == b"%d" % server.v2.current_index
    # a 404 turns into the key once it is created
    missing = fast(app, "/v2/keys/new")
    assert missing is not None and missing[0] == 404
    await put(app, "/new", "value=n")
    created = fast(app, "/v2/keys/new")
    assert created is not None and created[0] == 200
    # remaining TTLs are computed at read time, never reused
    await put(app, "/t", "value=t&ttl=5")
    ttl_before = orjson.loads(fast(app, "/v2/keys/t")[2])["node"]["ttl"]  # type: ignore[index]
    await asyncio.sleep(1.1)
    ttl_after = orjson.loads(fast(app, "/v2/keys/t")[2])["node"]["ttl"]  # type: ignore[index]
    assert ttl_after < ttl_before


async def test_reads_are_counted_in_the_store_stats(server: EtcdServer) -> None:
    app = make_app(server)
    await put(app, "/a", "value=1")
    before = dict(server.v2.stats)
    for _ in range(3):
        assert fast(app, "/v2/keys/a") is not None
        assert fast(app, "/v2/keys/missing") is not None
    after = server.v2.stats
    assert after["getsSuccess"] - before["getsSuccess"] == 3
    assert after["getsFail"] - before["getsFail"] == 3


FORM = [(b"content-type", b"application/x-www-form-urlencoded")]
WRITES: list[tuple[str, str, bytes]] = [
    ("PUT", "/v2/keys/a", b"value=1"),
    ("PUT", "/v2/keys/a", b"value=2"),
    ("PUT", "/v2/keys/a?prevExist=false", b"value=3"),
    ("PUT", "/v2/keys/a?prevValue=9", b"value=3"),
    ("PUT", "/v2/keys/a?prevValue=2&prevIndex=5", b"value=3"),
    ("PUT", "/v2/keys/a?prevExist=true", b"value=4"),
    ("PUT", "/v2/keys/a", b"value=5&noValueOnSuccess=true"),
    ("PUT", "/v2/keys/d?dir=true", b""),
    ("PUT", "/v2/keys/d", b"value=x"),
    ("POST", "/v2/keys/q", b"value=first"),
    ("POST", "/v2/keys/q", b"value=second"),
    ("PUT", "/v2/keys/big", b"value=" + b"b" * 3000),
    ("PUT", "/v2/keys/_hidden", b"value=h"),
    ("PUT", "/v2/keys/t", b"value=t&ttl=50"),
    ("PUT", "/v2/keys/t", b"ttl=60&refresh=true&prevExist=true"),
    ("DELETE", "/v2/keys/d", b""),
    ("DELETE", "/v2/keys/d?dir=true", b""),
    ("DELETE", "/v2/keys/a?prevValue=nope", b""),
    ("DELETE", "/v2/keys/a?prevIndex=10", b""),
    ("DELETE", "/v2/keys/nokey", b""),
    ("DELETE", "/v2/keys/q?recursive=true", b""),
    ("PUT", "/v2/keys", b"value=root"),
]
WRITES_DECLINED: list[tuple[str, str, bytes]] = [
    ("PUT", "/v2/keys/a?ttl=bad", b"value=1"),  # request errors answer through __call__
    ("PUT", "/v2/keys/a", b"value=%zz"),
    ("PUT", "/v2/keys//a", b"value=1"),
    ("PATCH", "/v2/keys/a", b"value=1"),
    ("POST", "/v3/kv/put", b"{}"),
]


async def test_fast_writes_equal_the_asgi_writes(tmp_path: Path) -> None:
    """The same writes on two fresh members, one through each path: the same answers."""
    async with running_server(tmp_path / "fast") as fast_srv, running_server(tmp_path / "asgi") as asgi_srv:
        fast_app, asgi_app = make_app(fast_srv), make_app(asgi_srv)
        for method, target, body in WRITES:
            parts = urlsplit(target)
            pending = fast_app.fast_response(method, parts.path.encode(), parts.query.encode(), FORM, body)
            got = await settled(pending)
            want = await asgi_answer(asgi_app, method, target, body)
            assert same_but_expiry(got, want), (method, target)
        for method, target, body in WRITES_DECLINED:
            parts = urlsplit(target)
            assert (
                fast_app.fast_response(method, parts.path.encode(), parts.query.encode(), FORM, body) is None
            )
        assert fast_srv.v2.stats == asgi_srv.v2.stats


async def test_fast_write_failure_is_an_etcd_error(server: EtcdServer) -> None:
    """A proposal whose apply never answers it times out as etcd's error 300, like propose()."""
    app = make_app(server)
    pending = app.fast_response("PUT", b"/v2/keys/a", b"", FORM, b"value=1")
    # Detach the answer from the proposed entry (as if its apply never came): only the
    # timeout sweep can answer it now.
    [(req_id, on_result)] = server._callbacks.items()
    del server._callbacks[req_id]
    server._callbacks[-1] = on_result
    server._callback_deadlines.append((time.monotonic() + 0.2, -1))
    status, _, body = await settled(pending)
    assert status == 500 and orjson.loads(body) == {
        "errorCode": 300,
        "message": "Raft Internal Error",
        "cause": "etcdserver: request timed out",
        "index": 0,
    }
    assert not server._callbacks


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


V3_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/v3/kv/put", {"key": b64("a"), "value": b64("1")}),
    ("/v3/kv/put", {"key": b64("a"), "value": b64("2"), "prev_kv": True}),
    ("/v3/kv/put", {"key": b64("b"), "value": b64("x" * 3000)}),  # a range over 2 KiB: chunked
    ("/v3/kv/put", {"key": b64("c"), "value": b64("3"), "lease": 12345}),  # lease not found
    ("/v3/kv/put", {"key": b64("nokey"), "ignore_value": True}),  # key not found
    ("/v3/kv/range", {"key": b64("a")}),
    ("/v3/kv/range", {"key": b64("a"), "range_end": b64("z"), "serializable": True}),
    ("/v3/kv/range", {"key": b64("a"), "range_end": b64("z"), "count_only": True}),
    ("/v3/kv/range", {"key": b64("a"), "range_end": b64("z"), "limit": 1, "keys_only": True}),
    ("/v3/kv/range", {"key": b64("missing")}),
]
V3_DECLINED: list[tuple[str, bytes]] = [
    ("/v3/kv/range", b'{"key": 5}'),  # bad JSON for the message: __call__ answers 400
    ("/v3/kv/range", b'{"key": "YQ==", "revision": 99}'),  # a future revision: an error
    ("/v3/kv/put", b'{"value": "YQ=="}'),  # no key: an error
    ("/v3/kv/txn", b"{}"),
    ("/v3/watch", b"{}"),
]


async def test_fast_v3_equals_the_asgi_v3(tmp_path: Path) -> None:
    async with running_server(tmp_path / "fast") as fast_srv, running_server(tmp_path / "asgi") as asgi_srv:
        fast_app, asgi_app = make_app(fast_srv), make_app(asgi_srv)
        for path, req in V3_CALLS:
            body = orjson.dumps(req)
            pending = fast_app.fast_response("POST", path.encode(), b"", [], body)
            assert pending is not None, (path, req)
            got = await settled(pending) if isinstance(pending, Later) else pending
            assert got == await asgi_answer(asgi_app, "POST", path, body), (path, req)
        for path, body in V3_DECLINED:
            assert fast_app.fast_response("POST", path.encode(), b"", [], body) is None, (path, body)
        override = [(b"x-http-method-override", b"GET")]
        assert fast_app.fast_response("POST", b"/v3/kv/range", b"", override, b"{}") is None
        assert fast_app.fast_response("GET", b"/v3/kv/range", b"", [], b"") is None


async def test_v3_range_answers_follow_writes(server: EtcdServer) -> None:
    """Kept range answers are dropped by any change: a v3 put, a v2 write (the raft index)."""
    app = make_app(server)
    rng = orjson.dumps({"key": b64("a")})

    async def fast_range() -> Answer:
        got = app.fast_response("POST", b"/v3/kv/range", b"", [], rng)
        assert got is not None and not isinstance(got, Later)
        assert got == await asgi_answer(app, "POST", "/v3/kv/range", rng)  # a read: same server
        return got

    async def v3_put(value: str) -> None:
        pending = app.fast_response(
            "POST", b"/v3/kv/put", b"", [], orjson.dumps({"key": b64("a"), "value": b64(value)})
        )
        assert (await settled(pending))[0] == 200

    def value_of(answer: Answer) -> str:
        return base64.b64decode(orjson.loads(answer[2])["kvs"][0]["value"]).decode()

    await v3_put("1")
    assert value_of(await fast_range()) == value_of(await fast_range()) == "1"
    await v3_put("2")
    assert value_of(await fast_range()) == "2"
    before = dict((await fast_range())[1])[b"x-raft-index"]
    await put(app, "/v2key", "value=x")
    after = dict((await fast_range())[1])[b"x-raft-index"]
    assert int(after) > int(before)


async def test_fast_long_poll_equals_the_asgi_long_poll(server: EtcdServer) -> None:
    app = make_app(server)
    await put(app, "/w", "value=0")
    waiting = fast(app, "/v2/keys/w?wait=true")
    assert waiting is not None and isinstance(waiting[2], asyncio.Future)
    general = asyncio.get_running_loop().create_task(asgi_answer(app, "GET", "/v2/keys/w?wait=true"))
    await asyncio.sleep(0.05)
    assert not waiting[2].done() and server.v2.hub.count == 2
    await put(app, "/w", "value=1")
    status, headers, body = await asyncio.wait_for(general, 5)
    assert (waiting[0], waiting[1], await asyncio.wait_for(waiting[2], 5)) == (status, headers, body)
    assert orjson.loads(body)["node"]["value"] == "1" and server.v2.hub.count == 0
    # a waitIndex still in history: the whole answer at once, as the general path gives it
    old = fast(app, "/v2/keys/w?wait=true&waitIndex=1")
    assert old is not None and isinstance(old[2], bytes)
    assert old == await asgi_answer(app, "GET", "/v2/keys/w?wait=true&waitIndex=1")
    assert fast(app, "/v2/keys/w?wait=true&stream=true") is None  # streams: the general path


async def test_fast_long_poll_cancel_and_close(server: EtcdServer) -> None:
    app = make_app(server)
    gone = fast(app, "/v2/keys/x?wait=true&recursive=true")
    assert gone is not None and isinstance(gone[2], asyncio.Future) and server.v2.hub.count == 1
    gone[2].cancel()  # what the server does when the client leaves
    await asyncio.sleep(0)
    assert server.v2.hub.count == 0
    closing = fast(app, "/v2/keys/x?wait=true")
    assert closing is not None and isinstance(closing[2], asyncio.Future)
    server.close_watchers()  # a stopping server ends every watch with an empty body
    assert await asyncio.wait_for(closing[2], 5) == b"" and server.v2.hub.count == 0
