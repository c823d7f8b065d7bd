"""app.httpserver against a small ASGI app over real loopback sockets (port 0), on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from app.httpserver import (
    FAST_BODY_MAX,
    SPIN_BACKOFF,
    SPIN_S,
    FastAnswer,
    Receive,
    Scope,
    Send,
    _ServerState,
    serve_asgi,
)

LOOPS = ["asyncio", "uvloop"]
Events = list[str]
CTX: contextvars.ContextVar[str] = contextvars.ContextVar("CTX", default="unset")


def run(loop_kind: str, main: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), timeout))


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    hdrs = [(b"content-type", b"text/plain"), *(headers or [])]
    if body is not None:
        hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        assert msg["type"] == "http.request", msg
        chunks.append(msg["body"])
        if not msg["more_body"]:
            return b"".join(chunks)


def make_app(events: Events) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        events.append(f"start {path}")
        if path == "/hello":
            await respond(send, 200, b"hello")
        elif path.startswith("/echo"):
            body = await read_all(receive)
            info = {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "version": scope["http_version"],
                "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
                "client": scope["client"][0],
                "body": body.decode(),
            }
            await respond(send, 200, json.dumps(info).encode())
        elif path.startswith("/slow"):
            await asyncio.sleep(0.05 if path == "/slow" else 0.3)
            await respond(send, 200, path.encode())
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"a", b"bb", b""):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"ccc"})
        elif path == "/watch":
            # Like a v2 watch: headers at once, then wait for an event or the client going away.
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"waiting\n", "more_body": True})
            await read_all(receive)
            msg = await receive()
            events.append(f"watch {msg['type']}")
            await send({"type": "http.response.body", "body": b"late"})  # dropped, no error
        elif path == "/headers-first":
            # A long poll: the head must reach the client while the app waits for its event.
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(0.5)
            await send({"type": "http.response.body", "body": b"event"})
        elif path == "/start-in-task":

            async def starter() -> None:
                await send({"type": "http.response.start", "status": 200, "headers": []})

            await asyncio.get_running_loop().create_task(starter())
            await asyncio.sleep(0.5)
            await send({"type": "http.response.body", "body": b"event"})
        elif path == "/task":
            # anyio (so httpx) needs a current task from the first line of the app on
            await respond(send, 200, b"task" if asyncio.current_task() is not None else b"none")
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x" * 5000})
        elif path == "/boom":
            raise ValueError("boom")
        elif path == "/boom-async":
            await asyncio.sleep(0)
            raise ValueError("boom")
        elif path == "/none":
            return
        elif path == "/bad-header":
            await respond(send, 200, b"x", [(b"x-evil", b"a\r\nset-cookie: x")])
        elif path == "/no-read":
            await respond(send, 200, b"no-read")
        elif path == "/close":
            await respond(send, 200, b"bye", [(b"connection", b"close")])
        elif path == "/ctx":
            before = CTX.get()
            CTX.set(path)
            await respond(send, 200, before.encode())
        elif path == "/empty204":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await respond(send, 404, b"nope")
        events.append(f"end {path}")

    return app


@contextlib.asynccontextmanager
async def serving(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], **kw: Any
) -> AsyncIterator[tuple[int, asyncio.Event, asyncio.Task[None]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    keep_alive_s = kw.pop("keep_alive_s", 5.0)
    task = asyncio.get_running_loop().create_task(
        serve_asgi(app, [sock], keep_alive_s=keep_alive_s, stop=stop, **kw)
    )
    try:
        yield port, stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw_head: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.raw_head = raw_head


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    raw_head = await reader.readuntil(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            assert name == name.lower()
            assert name not in headers, f"duplicate header {name}"
            headers[name] = value.strip()
    if head_request or status in (204, 304) or status < 200:
        return Response(status, headers, b"", raw_head)
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return Response(status, headers, body, raw_head)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_scope_and_keep_alive(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(
                b"POST /echo%20x?a=1&b=%20 HTTP/1.1\r\nHost: t\r\nX-Thing: Yes\r\nContent-Length: 3\r\n\r\nabc"
            )
            r = await read_response(reader)
            info = json.loads(r.body)
            assert r.status == 200 and r.raw_head.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
            assert info["method"] == "POST" and info["path"] == "/echo x" and info["raw_path"] == "/echo%20x"
            assert info["query"] == "a=1&b=%20" and info["version"] == "1.1" and info["body"] == "abc"
            assert ["x-thing", "Yes"] in info["headers"] and info["client"] == "127.0.0.1"
            assert "connection" not in r.headers
            writer.write(get("/hello"))  # same connection
            r = await read_response(reader)
            assert (r.status, r.body) == (200, b"hello")
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_pipelined_requests_answer_in_order(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(make_app(events)) as (port, _, _):
            reader, writer = await connect(port)
            body = b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
            writer.write(get("/slow") + get("/hello") + body + get("/slow2") + get("/hello"))
            answers = [await read_response(reader) for _ in range(5)]
            assert [a.body[:6] for a in answers] == [b"/slow", b"hello", b'{"meth', b"/slow2", b"hello"]
            assert json.loads(answers[2].body)["body"] == "hi"
            # one request at a time: each ends before the next starts
            assert events[:4] == ["start /slow", "end /slow", "start /hello", "end /hello"]
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_chunked_request_body_and_streamed_response(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"2\r\nde\r\n0\r\n\r\n")
            r = await read_response(reader)
            assert json.loads(r.body)["body"] == "abcde"
            writer.write(get("/stream"))
            r = await read_response(reader)
            assert r.headers["transfer-encoding"] == "chunked" and r.body == b"abbccc"
            writer.write(get("/big"))
            r = await read_response(reader)
            assert r.headers["transfer-encoding"] == "chunked" and r.body == b"x" * 5000
            writer.write(get("/empty204"))
            r = await read_response(reader)
            assert r.status == 204 and "transfer-encoding" not in r.headers
            writer.write(get("/hello"))  # the connection is still in step
            assert (await read_response(reader)).body == b"hello"
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stream_chunks_arrive_before_the_end_and_disconnect_reaches_receive(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(make_app(events)) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/watch"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head
            assert await reader.readuntil(b"waiting\n\r\n") == b"8\r\nwaiting\n\r\n"
            writer.close()
            for _ in range(100):
                if "end /watch" in events:
                    break
                await asyncio.sleep(0.01)
            assert "watch http.disconnect" in events and "end /watch" in events

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_http10_and_connection_close(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/big", version="1.0"))
            r = await read_response(reader)  # close-delimited: no chunked framing for HTTP/1.0
            assert "transfer-encoding" not in r.headers and r.body == b"x" * 5000
            assert r.headers["connection"] == "close"
            writer.close()
            reader, writer = await connect(port)
            writer.write(get("/hello", version="1.0"))
            r = await read_response(reader)
            assert r.body == b"hello" and r.headers["connection"] == "close"
            assert await closed_by_server(reader)
            writer.close()
            reader, writer = await connect(port)
            writer.write(get("/hello", "Connection: close\r\n"))
            r = await read_response(reader)
            assert r.body == b"hello" and r.headers["connection"] == "close"
            assert await closed_by_server(reader)
            writer.close()
            reader, writer = await connect(port)
            writer.write(get("/close"))  # the app says close
            r = await read_response(reader)
            assert r.body == b"bye" and r.headers["connection"] == "close"
            assert await closed_by_server(reader)
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_expect_100_continue(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
            )
            interim = await read_response(reader)
            assert interim.status == 100
            writer.write(b"data")
            r = await read_response(reader)
            assert json.loads(r.body)["body"] == "data"
            # an app that answers without reading the body: no 100, and the body is skipped
            writer.write(
                b"PUT /no-read HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
            )
            r = await read_response(reader)
            assert (r.status, r.body) == (200, b"no-read")
            writer.write(b"data" + get("/hello"))
            assert (await read_response(reader)).body == b"hello"
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_body_limit(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(make_app(events), max_body_bytes=10) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
            r = await read_response(reader)
            assert r.status == 413 and await closed_by_server(reader)
            assert events == []  # the app never saw it
            writer.close()
            reader, writer = await connect(port)  # chunked: counted as it arrives
            writer.write(
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nxxxxxxxx\r\n"
            )
            await asyncio.sleep(0.05)
            writer.write(b"8\r\nxxxxxxxx\r\n0\r\n\r\n")
            r = await read_response(reader)
            assert r.status == 413 and await closed_by_server(reader)
            writer.close()
            reader, writer = await connect(port)
            writer.write(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n" + b"x" * 10)
            assert json.loads((await read_response(reader)).body)["body"] == "x" * 10
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_app_errors(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            for path in ("/boom", "/boom-async", "/none", "/bad-header"):
                reader, writer = await connect(port)
                writer.write(get(path))
                r = await read_response(reader)
                assert (r.status, r.body) == (500, b"Internal Server Error"), path
                assert await closed_by_server(reader)
                writer.close()
            reader, writer = await connect(port)
            writer.write(b"NOT HTTP\r\n\r\n")
            r = await read_response(reader)
            assert r.status == 400 and await closed_by_server(reader)
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_head_and_contextvars(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(b"HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n")
            r = await read_response(reader, head_request=True)
            assert r.status == 200 and "transfer-encoding" not in r.headers
            writer.write(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            r = await read_response(reader, head_request=True)
            assert r.headers["content-length"] == "5"
            writer.write(get("/task"))
            assert (await read_response(reader)).body == b"task"
            # each request runs in its own copy of the context
            for _ in range(2):
                writer.write(get("/ctx"))
                assert (await read_response(reader)).body == b"unset"
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_idle_keep_alive_timeout(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([]), keep_alive_s=0.3) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/hello"))
            assert (await read_response(reader)).body == b"hello"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await closed_by_server(reader, 3.0)
            assert 0.2 <= loop.time() - t0 < 1.5
            writer.close()
            # a request that takes longer than the keep-alive is not cut off
            reader, writer = await connect(port)
            writer.write(get("/slow-long") + get("/slow-long"))
            assert (await read_response(reader)).body == b"/slow-long"
            assert (await read_response(reader)).body == b"/slow-long"
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_graceful_shutdown(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(make_app(events), graceful_s=1.0) as (port, stop, task):
            idle_r, idle_w = await connect(port)
            idle_w.write(get("/hello"))
            await read_response(idle_r)
            busy_r, busy_w = await connect(port)
            busy_w.write(get("/slow-long"))
            watch_r, watch_w = await connect(port)
            watch_w.write(get("/watch"))
            await watch_r.readuntil(b"waiting\n\r\n")
            await asyncio.sleep(0.05)
            stop.set()
            assert await closed_by_server(idle_r, 1.0)  # idle: closed at once
            r = await read_response(busy_r)  # in progress: finishes, then closes
            assert r.body == b"/slow-long" and r.headers["connection"] == "close"
            assert await closed_by_server(busy_r)
            await asyncio.wait_for(task, 3)  # the watch never ends: cancelled after graceful_s
            assert await closed_by_server(watch_r)
            with pytest.raises(OSError):
                await connect(port)
            for w in (idle_w, busy_w, watch_w):
                w.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("start", ["batch", "eager", "task"])
def test_start_modes_with_many_connections(loop_kind: str, start: str) -> None:
    async def main() -> None:
        async with serving(make_app([]), start=start) as (port, _, _):

            async def client(i: int) -> None:
                reader, writer = await connect(port)
                for _ in range(5):
                    writer.write(get("/hello") + get("/slow"))
                    assert (await read_response(reader)).body == b"hello"
                    assert (await read_response(reader)).body == b"/slow"
                writer.close()

            await asyncio.gather(*(client(i) for i in range(20)))

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_half_close_still_gets_its_answer(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/slow"))
            writer.write_eof()
            r = await read_response(reader)
            assert r.body == b"/slow"
            assert await closed_by_server(reader)
            writer.close()

    run(loop_kind, main)


def test_large_response_with_slow_reader() -> None:
    """Write back-pressure: a 4 MiB streamed answer to a reader that waits first."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):
            await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with serving(app) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/"))
            await asyncio.sleep(0.2)
            r = await read_response(reader)
            assert len(r.body) == 64 * 65536
            writer.close()

    run("uvloop", main)


@pytest.mark.parametrize("start", ["batch", "eager", "task"])
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_started_head_goes_out_while_the_app_waits(loop_kind: str, start: str) -> None:
    async def main() -> None:
        async with serving(make_app([]), start=start) as (port, _, _):
            reader, writer = await connect(port)
            for path in ("/headers-first", "/start-in-task"):
                writer.write(get(path))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.3)
                assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
                assert await reader.readuntil(b"0\r\n\r\n") == b"5\r\nevent\r\n0\r\n\r\n"
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_oversized_request_head_is_refused(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
            r = await read_response(reader)
            assert r.status == 400
            assert await closed_by_server(reader)
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_early_answer_to_an_unread_big_body_keeps_reading(loop_kind: str) -> None:
    async def main() -> None:
        async with serving(make_app([])) as (port, _, _):
            reader, writer = await connect(port)
            # a 404 answered while 1 MiB of body is still arriving: the rest is skipped, reading
            # does not stay paused, and the next request on the connection is answered
            writer.write(
                b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 300_000
            )
            r = await read_response(reader)
            assert r.status == 404
            writer.write(b"x" * (1048576 - 300_000) + get("/hello"))
            r = await read_response(reader)
            assert (r.status, r.body) == (200, b"hello")
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_broken_chunked_body_reaches_the_waiting_app_as_a_disconnect(loop_kind: str) -> None:
    async def main() -> None:
        seen: list[str] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    seen.append("disconnect")
                    return
                if not msg.get("more_body"):
                    await respond(send, 200, b"whole")
                    return

        async with serving(app) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"zz-not-a-size\r\n")
            assert await closed_by_server(reader)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            assert seen == ["disconnect"]
            writer.close()

    run(loop_kind, main)


class FastApp:
    """make_app's ASGI app plus a fast_response for /fast* (and one that fails on /fast-boom).

    As the contract asks, the ASGI app gives the same answers (a fast-eligible request queued
    behind another goes through it); `events` shows which path answered.
    """

    def __init__(self, events: Events) -> None:
        self.asgi = make_app(events)
        self.events = events
        self.waits: list[asyncio.Future[bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._answer(scope["raw_path"], scope["query_string"])
        if answer is None or scope["method"] != "GET":
            await self.asgi(scope, receive, send)
            return
        self.events.append(f"asgi {scope['path']}")
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def fast_response(
        self, method: str, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> FastAnswer | asyncio.Future[FastAnswer] | None:
        self.events.append(f"fast {method} {raw_path.decode()}")
        if raw_path == b"/fast-boom":
            raise ValueError("boom")
        if raw_path == b"/fast-wait":  # a long poll: the head now, the body once resolved
            waiting: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.waits.append(waiting)
            waiting.add_done_callback(
                lambda f: self.events.append("wait cancelled" if f.cancelled() else "wait done")
            )
            return 200, [(b"content-type", b"text/plain")], waiting
        if raw_path in (b"/fast-later", b"/fast-fail-later"):
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[FastAnswer] = loop.create_future()
            if raw_path == b"/fast-later":
                answer = b"later " + body
                ok = (200, [(b"content-length", b"%d" % len(answer))], answer)
                loop.call_later(0.05, lambda: fut.done() or fut.set_result(ok))
            else:
                loop.call_later(0.05, lambda: fut.set_exception(ValueError("later")))
            return fut
        return self._answer(raw_path, query) if method == "GET" else None

    def _answer(self, raw_path: bytes, query: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if not raw_path.startswith(b"/fast") or raw_path == b"/fast-boom":
            return None
        if raw_path == b"/fast-big":  # no content-length: the body goes out chunked
            return 200, [(b"content-type", b"text/plain")], b"y" * 3000
        if raw_path == b"/fast-204":
            return 204, [], b""
        body = b"fast " + query
        return 200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))], body


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fast_response_answers_plain_gets_in_order(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(FastApp(events)) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/fast?x=1"))
            r = await read_response(reader)
            assert (r.status, r.body) == (200, b"fast x=1")
            assert r.raw_head.startswith(b"HTTP/1.1 200 OK\r\ndate: ") and "connection" not in r.headers
            assert events == ["fast GET /fast"]  # the ASGI app never ran
            writer.write(get("/fast-big"))
            r = await read_response(reader)
            assert r.headers["transfer-encoding"] == "chunked" and r.body == b"y" * 3000
            writer.write(get("/fast-204"))
            r = await read_response(reader)
            assert r.status == 204 and "content-length" not in r.headers
            # Behind a slow ASGI answer, a fast-eligible request waits its turn (no overtaking).
            events.clear()
            writer.write(get("/slow") + get("/fast?y") + get("/hello") + get("/fast?z"))
            answers = [await read_response(reader) for _ in range(4)]
            assert [a.body for a in answers] == [b"/slow", b"fast y", b"hello", b"fast z"]
            assert events == [
                "fast GET /slow",
                "start /slow",
                "end /slow",
                "asgi /fast",
                "start /hello",
                "end /hello",
                "asgi /fast",
            ]
            writer.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fast_response_only_for_bodyless_keep_alive_requests(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(FastApp(events)) as (port, _, _):
            reader, writer = await connect(port)
            # a chunked body, 100-continue, a body over FAST_BODY_MAX: all through the ASGI app
            writer.write(b"GET /fast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            r = await read_response(reader)
            assert (r.status, r.body) == (200, b"fast ")
            writer.write(
                b"PUT /fast-later HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            writer.write(b"hi")
            r = await read_response(reader)
            assert (r.status, r.body) == (404, b"nope")
            big = b"x" * (FAST_BODY_MAX + 1)
            writer.write(
                b"PUT /fast-later HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(big), big)
            )
            r = await read_response(reader)
            assert (r.status, r.body) == (404, b"nope")
            assert events == [
                "asgi /fast",
                "start /fast-later",
                "end /fast-later",
                "start /fast-later",
                "end /fast-later",
            ]
            # a failing fast_response falls back to the app (which answers 404 here)
            writer.write(get("/fast-boom"))
            r = await read_response(reader)
            assert (r.status, r.body) == (404, b"nope")
            writer.close()
            # HTTP/1.0 and Connection: close answers must close: the ASGI path frames those
            events.clear()
            reader, writer = await connect(port)
            writer.write(get("/fast", version="1.0"))
            r = await read_response(reader)
            assert r.body == b"fast " and await closed_by_server(reader)
            reader, writer = await connect(port)
            writer.write(get("/fast", extra="Connection: close\r\n"))
            r = await read_response(reader)
            assert r.headers["connection"] == "close" and await closed_by_server(reader)
            assert events == ["asgi /fast", "asgi /fast"]

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fast_response_answers_later_through_a_future(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        async with serving(FastApp(events)) as (port, _, _):
            reader, writer = await connect(port)
            # the body arrives after the head: the request waits for it, then goes the fast way;
            # requests pipelined behind a pending answer wait for it
            writer.write(b"PUT /fast-later HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab")
            await asyncio.sleep(0.05)
            writer.write(b"cde" + get("/fast?after") + get("/hello"))
            answers = [await read_response(reader) for _ in range(3)]
            assert [a.body for a in answers] == [b"later abcde", b"fast after", b"hello"]
            assert events[0] == "fast PUT /fast-later" and "start /fast-later" not in events
            # a write without a body (DELETE) waits its turn as well, and is offered once
            events.clear()
            writer.write(b"DELETE /fast-later HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"))
            answers = [await read_response(reader) for _ in range(2)]
            assert [a.body for a in answers] == [b"later ", b"hello"]
            assert events == ["fast DELETE /fast-later", "start /hello", "end /hello"]
            # a failed Future: 500, and the connection ends
            writer.write(b"PUT /fast-fail-later HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
            r = await read_response(reader)
            assert r.status == 500 and r.headers["connection"] == "close" and await closed_by_server(reader)
            # a client gone before its answer: nothing is written, the server goes on
            reader, writer = await connect(port)
            writer.write(b"PUT /fast-later HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
            await asyncio.sleep(0.01)
            writer.transport.abort()
            await asyncio.sleep(0.1)
            reader, writer = await connect(port)
            writer.write(get("/fast?still"))
            assert (await read_response(reader)).body == b"fast still"
            # a graceful stop lets a pending answer finish, with connection: close
            writer.write(b"PUT /fast-later HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nz")
            await asyncio.sleep(0.01)
        # leaving the block stopped the server: the pending answer went out first
        r = await read_response(reader)
        assert r.body == b"later z" and r.headers["connection"] == "close"
        assert await closed_by_server(reader)

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fast_long_poll_head_first_then_body(loop_kind: str) -> None:
    async def main() -> None:
        events: Events = []
        app = FastApp(events)
        async with serving(app) as (port, _, _):
            reader, writer = await connect(port)
            writer.write(get("/fast-wait") + get("/hello"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)  # before any body
            assert head.startswith(b"HTTP/1.1 200 OK\r\ndate: ") and b"transfer-encoding: chunked" in head
            assert len(app.waits) == 1 and events == ["fast GET /fast-wait"]  # /hello waits its turn
            app.waits[0].set_result(b"event")
            assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 3) == b"5\r\nevent\r\n0\r\n\r\n"
            assert (await read_response(reader)).body == b"hello"  # the same connection goes on
            # an empty body ends the answer (a closed watcher)
            writer.write(get("/fast-wait"))
            await reader.readuntil(b"\r\n\r\n")
            app.waits[1].set_result(b"")
            assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 3) == b"0\r\n\r\n"
            # the client leaving cancels the body
            events.clear()
            writer.write(get("/fast-wait"))
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.abort()
            await asyncio.sleep(0.1)
            assert app.waits[2].cancelled() and events == ["fast GET /fast-wait", "wait cancelled"]
            # a half-close ends the answer and the connection, as a watch's client leaving
            reader, writer = await connect(port)
            writer.write(get("/fast-wait"))
            await reader.readuntil(b"\r\n\r\n")
            writer.write_eof()
            assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 3) == b"0\r\n\r\n"
            assert await closed_by_server(reader) and app.waits[3].cancelled()

    run(loop_kind, main)


class FakeClock:
    """Moves `step` seconds on every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, b"")


async def turns_until_still(state: _ServerState, limit: int = 1000) -> int:
    """Loop turns until the post-answer poll has ended (at most `limit`)."""
    for turn in range(limit):
        if not state.spinning:
            return turn
        await asyncio.sleep(0)
    return limit


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_post_answer_poll_ends_and_backs_off_when_nothing_comes(loop_kind: str) -> None:
    async def main() -> None:
        state = _ServerState(noop_app, keep_alive_s=5, max_body_bytes=-1, date_header=False, start="task")
        clock = FakeClock(SPIN_S / 4)
        state.clock = clock
        state.answered()
        assert state.spinning
        turns = await turns_until_still(state)
        # it polled until the clock passed the window, and not longer
        assert 3 <= turns <= 6 and clock.now >= SPIN_S
        assert state.spin_skip == SPIN_BACKOFF
        # the next answers are not followed by a poll, then one is again
        for _ in range(SPIN_BACKOFF):
            state.answered()
            assert not state.spinning
        state.answered()
        assert state.spinning
        assert await turns_until_still(state) < 10

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_post_answer_poll_goes_on_while_requests_come(loop_kind: str) -> None:
    async def main() -> None:
        state = _ServerState(noop_app, keep_alive_s=5, max_body_bytes=-1, date_header=False, start="task")
        state.clock = FakeClock(SPIN_S / 4)
        state.answered()
        for _ in range(20):  # a request arrives every loop turn: the window keeps moving
            state.activity += 1
            await asyncio.sleep(0)
            assert state.spinning
        assert await turns_until_still(state) <= 6
        assert state.spin_skip == 0  # it found requests: no back-off
        state.answered()
        assert state.spinning
        state.stopping = True  # a stopping server does not poll on
        assert await turns_until_still(state) <= 2

    run(loop_kind, main)

