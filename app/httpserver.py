"""A lean HTTP/1.1 server for one ASGI app: an asyncio Protocol per connection, httptools parsing.

It speaks the subset of ASGI 3 `http` that etcdpy's apps use, with uvicorn's observable rules:
- framing: the app's content-length, else chunked for HTTP/1.1 (close-delimited for HTTP/1.0);
  HEAD, 204 and 304 never carry a body; a `date` header first; header names written lower-case;
- keep-alive unless the request (HTTP/1.0, `Connection: close`) or the response (`connection:
  close`) says otherwise; pipelined requests are answered one at a time, in order;
- `receive()` gives the body, then blocks until the client goes away (or the response is done),
  then says `http.disconnect`; `send()` after a disconnect is dropped silently;
- an app that fails before its response start gets a 500, after it the connection is closed.

What it saves compared with uvicorn's httptools protocol (bench/http_servers.py measures it):
- the response head and body leave in ONE write: the head of `http.response.start` waits for the
  first body message, or goes out when the app suspends first (a long poll shows its headers at
  once); uvicorn writes the head on its own, so each small answer costs two syscalls and segments;
- no proxy-headers middleware, no per-request asyncio.Event, no keep-alive timer armed and
  cancelled per response: one ticker per server closes idle connections and refreshes `date`.
An app may also offer `fast_response` (FastResponder below; ClientApp does): a keep-alive request
that is next in line on its connection, with no body or a small one, is offered to it first, and
when it answers, no scope, Task or send/receive coroutine is made: an answer is written at once,
a Future's answer when it resolves (a write, after its fsync), a long poll's head at once and its
body later. It must give the bytes the ASGI path would (tests/api/test_fast_path.py pins that).
Every other request runs in a Task of its own (start="task", the default), as under uvicorn. The other
start modes run the app's first step without a Task (its own Task only once it waits): "eager"
inside data_received, "batch" from one callback per loop turn. They saved at most ~5% CPU per
request here and break code that needs `asyncio.current_task()` before its first suspension
(anyio, hence httpx: a follower forwarding a write answered 500; `asyncio.timeout` in 3.11).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http
import logging
import re
import socket
import time
import types
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, MutableMapping
from email.utils import formatdate
from typing import Any, Final, Literal, Protocol, cast

import httptools

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartMode = Literal["batch", "eager", "task"]
# app.fast_response(method, raw_path, query, headers, body) -> an answer (status, headers, body),
# a Future of one (the connection answers when it resolves), or None (the request goes to the ASGI
# app instead). Answer headers are complete and lower-case (no content-length: chunked body).
# An answer to a GET whose body is a Future[bytes] is a long poll: the head goes out at once, the
# body (chunked) when the Future resolves; it is cancelled when the client leaves first.
FastAnswer = tuple[int, list[tuple[bytes, bytes]], "bytes | asyncio.Future[bytes]"]


class PendingAnswer(Protocol):
    """A write's answer still to come: an asyncio.Future, or anything with the part of its
    interface used here (store.later.Later, whose callback runs as soon as it is settled)."""

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def result(self) -> FastAnswer: ...


FastResponder = Callable[
    [str, bytes, bytes, list[tuple[bytes, bytes]], bytes], "FastAnswer | PendingAnswer | None"
]
FAST_BODY_MAX: Final = 64 * 1024  # bigger bodies always take the ASGI path

log = logging.getLogger("etcdpy.httpserver")

ASGI_INFO: Final = {"version": "3.0", "spec_version": "2.3"}
CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINE: Final = 16  # parsed requests queued behind the running one before reading pauses
_NOTED_HEADERS: Final = frozenset({b"content-length", b"expect", b"transfer-encoding"})
READ_HIGH_WATER: Final = 256 * 1024  # unread request body buffered before reading pauses
MAX_HEADER_BYTES: Final = 1 << 20  # request line and headers (Go's http.DefaultMaxHeaderBytes)
# After an answer the loop polls for this long before it may sleep (see _ServerState.answered).
SPIN_S: Final = 100e-6
SPIN_BACKOFF: Final = 16  # answers not followed by a poll after one that found nothing
_HEADER_NAME_BAD = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE_BAD = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_DISCONNECT: Final = {"type": "http.disconnect"}


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE: Final = {status: _status_line(status) for status in range(100, 600)}
_METHODS: Final = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


def _plain_response(status: int, text: bytes, date_line: bytes) -> bytes:
    return b"".join(
        [
            STATUS_LINE[status],
            date_line,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(text),
            b"connection: close\r\n\r\n",
            text,
        ]
    )


@types.coroutine
def _drive(cycle: _Cycle, coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, None]:
    """Run, inside a Task, an app coroutine whose first step already ran and yielded `yielded`.

    This is `yield from coro` for a coroutine that is already suspended: the Task sees the future
    the coroutine waits on, and sends or throws into it exactly as if it had started it. Before
    each suspension, a response head the app started but has not followed with a body goes out
    (a long poll must show its headers while it waits).
    """
    conn = cycle.conn
    while True:
        if cycle.pending_head is not None:
            cycle.flush_head()
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            conn.stepping = cycle
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            finally:
                conn.stepping = None
        else:
            conn.stepping = cycle
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return
            finally:
                conn.stepping = None


class _ServerState:
    """What every connection of one server shares."""

    def __init__(
        self, app: ASGIApp, *, keep_alive_s: float, max_body_bytes: int, date_header: bool, start: StartMode
    ) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.keep_alive_s = keep_alive_s
        self.max_body_bytes = max_body_bytes
        self.date_header = date_header
        self.start = start
        self.ready: list[HttpProtocol] = []  # "batch": connections with a request to start
        self.ready_scheduled = False
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.all_closed = asyncio.Event()
        self.date_line = b""
        self.refresh_date()
        self.clock: Callable[[], float] = time.perf_counter
        self.activity = 0  # requests read and answers written, counted for the post-answer poll
        self.spinning = False
        self.spin_seen = 0
        self.spin_until = 0.0
        self.spin_hit = False
        self.spin_skip = 0
        # The app's synchronous answer for body-less requests that need no waiting (see
        # HttpProtocol._try_fast); None for a plain ASGI app.
        self.fast: FastResponder | None = getattr(app, "fast_response", None)

    def refresh_date(self) -> None:
        if self.date_header:
            self.date_line = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"

    def tick(self, interval: float) -> None:
        self.refresh_date()
        for conn in list(self.connections):
            conn.tick(interval)

    def answered(self) -> None:
        """An answer went out: keep the loop polling (epoll with no timeout) for SPIN_S more
        instead of letting it sleep, as Go's scheduler spins before it parks.

        A client that sends its next request as soon as it has the answer (a lone writer,
        a script) then finds this thread on its CPU: an idle virtual CPU that must be woken
        costs ~30 us per request here, ~10% of a lone durable write (measured A/B). Bounded:
        a poll that found no request costs SPIN_S of CPU, and the next SPIN_BACKOFF answers
        are not followed by one; under load the loop never sleeps anyway.
        """
        self.activity += 1
        if self.spinning:
            return
        if self.spin_skip:
            self.spin_skip -= 1
            return
        self.spinning = True
        self.spin_hit = False
        self.spin_seen = self.activity
        self.spin_until = self.clock() + SPIN_S
        self.loop.call_soon(self._spin)

    def _spin(self) -> None:
        now = self.clock()
        if self.activity != self.spin_seen:
            self.spin_seen = self.activity
            self.spin_until = now + SPIN_S
            self.spin_hit = True
        if now < self.spin_until and not self.stopping:
            self.loop.call_soon(self._spin)
            return
        self.spinning = False
        if not self.spin_hit:
            self.spin_skip = SPIN_BACKOFF

    def schedule(self, conn: HttpProtocol) -> None:
        self.ready.append(conn)
        if not self.ready_scheduled:
            self.ready_scheduled = True
            self.loop.call_soon(self.run_ready)

    def run_ready(self) -> None:
        ready, self.ready = self.ready, []
        self.ready_scheduled = False
        for conn in ready:
            conn.run_queue()

    def discard(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self.all_closed.set()


class _Cycle:
    """One request and its response."""

    __slots__ = (
        "body",
        "body_size",
        "body_total",
        "chunked",
        "complete",
        "conn",
        "disconnected",
        "expect_100",
        "fast",
        "final_sent",
        "head",
        "http11",
        "keep_alive",
        "more_body",
        "pending_head",
        "remaining",
        "scope",
        "started",
        "waiter",
        "waiting",
    )

    def __init__(
        self, conn: HttpProtocol, scope: Scope | None, keep_alive: bool, expect_100: bool, http11: bool, head: bool
    ) -> None:
        self.conn = conn
        # None while the request may still be answered by fast_response: the ASGI scope is built
        # only for requests the app will see (it is ~1 us of a write's time otherwise).
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.http11 = http11
        self.head = head
        self.body: list[bytes] = []  # received, not yet handed to the app
        self.body_size = 0
        self.body_total = 0
        self.more_body = True
        self.final_sent = False  # the app has seen more_body=False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False  # http.response.start seen
        self.complete = False  # the last body message written
        self.pending_head: bytes | None = None  # the head, written with the first body
        self.chunked = False
        self.remaining = -1  # content-length still owed; -1: no content-length
        # (method, raw_path, query, http_version): try fast_response, then build the scope
        self.fast: tuple[str, bytes, bytes, str] | None = None
        self.waiting: asyncio.Future[bytes] | None = None  # a fast answer's body still to come

    # ---- from the connection -------------------------------------------------------------

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- ASGI ------------------------------------------------------------------------------

    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_100:
            self.expect_100 = False
            if not self.started and not conn.transport.is_closing():
                conn.transport.write(CONTINUE_100)
        while True:
            if self.disconnected or self.complete:
                return dict(_DISCONNECT)
            if self.body_size or (not self.more_body and not self.final_sent):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.body_size = 0
                if not self.more_body:
                    self.final_sent = True
                conn.maybe_resume_reading()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self.final_sent and conn.eof:
                return dict(_DISCONNECT)  # the client half-closed: nothing more will come
            conn.maybe_resume_reading()
            waiter = conn.state.loop.create_future()
            self.waiter = waiter
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.pending_head = self._head(message["status"], message.get("headers", ()))
            self.started = True
            self.expect_100 = False
            if conn.stepping is not self:  # sent from another task: nobody flushes it later
                self.flush_head()
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.head:
            data = b""
        elif self.chunked:
            if body:
                data = b"%x\r\n%b\r\n" % (len(body), body)
                if not more:
                    data += b"0\r\n\r\n"
            else:
                data = b"" if more else b"0\r\n\r\n"
        else:
            data = body
            if self.remaining >= 0:
                if len(body) > self.remaining:
                    raise RuntimeError("Response content longer than Content-Length")
                self.remaining -= len(body)
        head = self.pending_head
        transport = conn.transport
        if head is not None:
            self.pending_head = None
            if len(data) <= 16384:
                transport.write(head + data)
            else:
                transport.writelines((head, data))
        elif data:
            transport.write(data)
        if not more:
            if self.remaining > 0 and not self.head:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            conn.response_done(self)

    def flush_head(self) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            if not self.disconnected:
                self.conn.transport.write(head)

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        parts = [STATUS_LINE.get(status) or _status_line(status), self.conn.state.date_line]
        lines = 2 if parts[1] else 1
        has_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if not self.chunked and self.remaining < 0:
                    self.remaining = int(value)
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.chunked = True
                    self.remaining = -1
            elif name == b"connection":
                if b"close" in [t.strip() for t in value.lower().split(b",")]:
                    self.keep_alive = False
                    has_close = True
            parts += (name, b": ", value, b"\r\n")
            lines += 1
        if status in (204, 304) or status < 200:
            self.remaining = 0 if self.remaining < 0 and not self.chunked else self.remaining
        elif self.remaining < 0 and not self.chunked and not self.head:
            if self.http11:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
                lines += 1
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends when the connection does
        if self.conn.state.stopping:
            self.keep_alive = False
        if not self.keep_alive and not has_close:
            parts.append(b"connection: close\r\n")
            lines += 1
        parts.append(b"\r\n")
        block = b"".join(parts)
        # One CR and one LF per line, or a name or value smuggled a line break in.
        if block.count(b"\n") != lines + 1 or block.count(b"\r") != lines + 1:
            for name, value in headers:
                if _HEADER_NAME_BAD.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                if _HEADER_VALUE_BAD.search(value):
                    raise RuntimeError("Invalid HTTP header value.")
            raise RuntimeError("Invalid HTTP header.")
        return block

    # ---- after the app ---------------------------------------------------------------------

    def app_finished(self, exc: BaseException | None) -> None:
        conn = self.conn
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            log.error("Exception in ASGI application", exc_info=exc)
        if self.disconnected:
            return
        if not self.started:
            if exc is None:
                log.error("ASGI callable returned without starting response.")
            self.started = self.complete = True
            self.keep_alive = False
            conn.transport.write(_plain_response(500, b"Internal Server Error", conn.state.date_line))
            conn.response_done(self)
        elif not self.complete:
            if exc is None:
                log.error("ASGI callable returned without completing response.")
            conn.transport.close()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools >= 0.6.3
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.cycle: _Cycle | None = None  # the request being answered
        self.parsing: _Cycle | None = None  # the request whose body the parser is reading
        self.queue: deque[_Cycle] = deque()  # parsed, waiting for `cycle` to finish
        self.url = b""
        self.header_bytes = 0  # request line + headers so far, against MAX_HEADER_BYTES
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self.content_length = -1
        self.transfer_encoding = False
        self.in_data = False  # inside data_received: it starts queued requests itself
        self.stepping: _Cycle | None = None  # the request whose app code runs right now
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.closed = False
        self.touched = True
        self.idle_s = 0.0

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        if isinstance(sockname, tuple):
            self.server = (str(sockname[0]), int(sockname[1]))
        if isinstance(peername, tuple):
            self.client = (str(peername[0]), int(peername[1]))
        self.state.connections.add(self)
        if self.state.stopping:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for cycle in (self.cycle, self.parsing):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
                if cycle.waiting is not None:
                    cycle.waiting.cancel()
        self.queue.clear()
        self.cycle = self.parsing = None
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.state.discard(self)

    def eof_received(self) -> bool | None:
        self.eof = True
        if (self.cycle is None and not self.queue) or self.parsing is not None:
            return None  # close: nothing owed, or a request body that can never be complete
        cycle = self.cycle
        if cycle is not None:
            cycle.wake()
            if cycle.waiting is not None:
                # A long poll ends when its client half-closes (as the ASGI app's does, hearing
                # the disconnect): the body is dropped, the answer ends, the connection closes.
                cycle.waiting.cancel()
                cycle.waiting = None
                self._end_chunked(cycle, b"0\r\n\r\n")
        return True  # keep the write side open for the answers still owed

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.drain_waiter = None

    async def drain(self) -> None:
        if self.closed or not self.write_paused:
            return
        if self.drain_waiter is None:
            self.drain_waiter = self.state.loop.create_future()
        await asyncio.shield(self.drain_waiter)

    def data_received(self, data: bytes) -> None:
        self.touched = True
        self.state.activity += 1
        self.in_data = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrades here: answer the request as plain HTTP, then close (the parser stopped).
            if self.parsing is not None:
                self.parsing.keep_alive = False
                self.parsing.more_body = False
                self.parsing = None
        except httptools.HttpParserError:
            self._bad_request()
            return
        finally:
            self.in_data = False
        if self.cycle is None and self.queue:
            if self.state.start == "batch":
                self.state.schedule(self)
            else:
                self.run_queue()

    # ---- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.header_bytes = 0
        self.url = b""
        self.headers = []
        self.expect_100 = False
        self.content_length = -1
        self.transfer_encoding = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.header_bytes + len(name) + len(value)
        self.header_bytes = size
        if size > MAX_HEADER_BYTES:
            # Go's MaxHeaderBytes: an endless header must not grow memory without bound
            raise httptools.HttpParserError("request header too large")
        name = name.lower()
        if name in _NOTED_HEADERS:  # one set lookup for the usual headers (runs per header)
            if name == b"content-length":
                with contextlib.suppress(ValueError):
                    self.content_length = int(value)
            elif name == b"expect":
                if value.lower() == b"100-continue":
                    self.expect_100 = True
            else:
                self.transfer_encoding = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        method_b = parser.get_method()
        method = _METHODS.get(method_b) or method_b.decode("ascii", "replace")
        version = parser.get_http_version()
        keep_alive = version == "1.1" and parser.should_keep_alive() and not self.state.stopping
        fast_ok = (
            keep_alive
            and self.state.fast is not None
            and self.cycle is None
            and not self.queue
            and not self.transfer_encoding
            and not self.expect_100
            and not self.write_paused
        )
        if (
            fast_ok
            and method == "GET"
            and self.content_length <= 0
            and self._try_fast(method, raw_path, query, b"", None)
        ):
            return
        fast = fast_ok and method != "GET" and self.content_length <= FAST_BODY_MAX
        scope = None if fast else self._scope(method, raw_path, query, version)
        cycle = _Cycle(self, scope, keep_alive, self.expect_100, version == "1.1", method == "HEAD")
        if 0 <= self.state.max_body_bytes < self.content_length:
            self._too_large(cycle)
            return
        self.parsing = cycle
        if fast:
            # Held back until its body (if any) is complete (on_message_complete), then offered
            # to fast_response, which may answer through a Future (a write); nothing else can be
            # parsed or queued on this connection meanwhile.
            cycle.fast = (method, raw_path, query, version)
            return
        self.queue.append(cycle)
        if len(self.queue) > MAX_PIPELINE:
            self._pause_reading()

    def _scope(self, method: str, raw_path: bytes, query: bytes, version: str) -> Scope:
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        return {
            "type": "http",
            "asgi": ASGI_INFO,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
        }

    def _try_fast(
        self, method: str, raw_path: bytes, query: bytes, body: bytes, cycle: _Cycle | None
    ) -> bool:
        """Offer a keep-alive request, next in line on its connection, to the app's fast_response:
        True if it answered (at once, or later through a Future; then `cycle` is the running one)."""
        assert self.state.fast is not None
        try:
            answer = self.state.fast(method, raw_path, query, self.headers, body)
        except Exception:
            log.exception("fast_response failed; answering through the ASGI app")
            return False
        if answer is None:
            return False
        if isinstance(answer, tuple):
            if isinstance(answer[2], asyncio.Future):
                self._fast_wait(method, answer[0], answer[1], answer[2], cycle)
                return True
            self._write_parts(self._fast_parts(answer))
            self.touched = True
            self.state.answered()
            if cycle is not None:
                cycle.started = cycle.complete = True
            return True
        if cycle is None:  # a contract breach: a GET must be answered at once
            raise RuntimeError("fast_response returned a Future for a GET")
        self.cycle = cycle
        answer.add_done_callback(lambda fut: self._fast_done(cycle, fut))
        return True

    def _fast_wait(
        self,
        method: str,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: asyncio.Future[bytes],
        cycle: _Cycle | None,
    ) -> None:
        """A head now and its (chunked) body when `body` resolves: a long poll. The Future is
        cancelled if the client goes away or half-closes first."""
        if cycle is None:
            cycle = _Cycle(self, None, True, False, True, method == "HEAD")
            cycle.more_body = False
            cycle.final_sent = True
        cycle.started = cycle.chunked = True
        cycle.waiting = body
        self.cycle = cycle
        self.transport.write(self._fast_head(status, headers, chunked=True, close=False)[0])
        self.touched = True
        body.add_done_callback(lambda fut: self._fast_body_done(cycle, fut))

    def _fast_body_done(self, cycle: _Cycle, fut: asyncio.Future[bytes]) -> None:
        cycle.waiting = None
        if cycle.disconnected or cycle.complete or self.closed or fut.cancelled():
            return
        if fut.exception() is not None:
            log.error("fast_response's answer failed", exc_info=fut.exception())
            self.transport.close()  # the head is out: as after a failed ASGI answer
            return
        body = fut.result()
        self._end_chunked(cycle, b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")

    def _end_chunked(self, cycle: _Cycle, data: bytes) -> None:
        self.transport.write(data)
        cycle.complete = True
        if self.state.stopping:
            cycle.keep_alive = False
        self.response_done(cycle)

    def _fast_done(self, cycle: _Cycle, fut: PendingAnswer) -> None:
        if cycle.disconnected or self.closed:
            return
        cycle.started = cycle.complete = True
        if fut.cancelled() or fut.exception() is not None:
            if not fut.cancelled():
                log.error("fast_response's answer failed", exc_info=fut.exception())
            cycle.keep_alive = False
            self.transport.write(_plain_response(500, b"Internal Server Error", self.state.date_line))
        else:
            if self.state.stopping:
                cycle.keep_alive = False
            self._write_parts(self._fast_parts(fut.result(), close=not cycle.keep_alive))
        self.response_done(cycle)

    def _write_parts(self, parts: tuple[bytes, ...]) -> None:
        """Write (head, body pieces...): one buffer for a small answer, no copy of a big body."""
        if len(parts) == 2 and len(parts[1]) <= 16384:
            self.transport.write(parts[0] + parts[1])
        elif len(parts) == 4 and len(parts[2]) <= 16384:
            self.transport.write(b"".join(parts))
        else:
            self.transport.writelines(parts)

    def _fast_head(
        self, status: int, headers: list[tuple[bytes, bytes]], *, chunked: bool, close: bool
    ) -> tuple[bytes, bool]:
        """The head of a fast answer, and whether its body goes out chunked: as _Cycle frames
        one, chunked when `chunked` is allowed and the headers carry no content-length."""
        parts = [STATUS_LINE.get(status) or _status_line(status), self.state.date_line]
        for name, value in headers:
            if name == b"content-length":
                chunked = False
            parts += (name, b": ", value, b"\r\n")
        if chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        if close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts), chunked

    def _fast_parts(self, answer: FastAnswer, close: bool = False) -> tuple[bytes, ...]:
        """The answer as (head, body) or, chunked, (head, chunk size line, body, chunk tail)."""
        status, headers, body = answer
        if not isinstance(body, bytes):
            raise TypeError("a long poll (a Future body) must be answered at once, to a GET")
        no_body = status in (204, 304) or status < 200
        head, chunked = self._fast_head(status, headers, chunked=not no_body, close=close)
        if no_body:
            return head, b""
        if not chunked:
            return head, body
        if not body:
            return head, b"0\r\n\r\n"
        return head, b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n"

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete or cycle.disconnected:
            return
        cycle.body_total += len(body)
        if cycle.body_total > self.state.max_body_bytes >= 0:
            self._too_large(cycle)
            return
        cycle.body.append(body)
        cycle.body_size += len(body)
        if cycle.body_size > READ_HIGH_WATER:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is None:
            return
        self.parsing = None
        cycle.more_body = False
        fast = cycle.fast
        if fast is not None:
            cycle.fast = None
            method, raw_path, query, version = fast
            body = cycle.body[0] if len(cycle.body) == 1 else b"".join(cycle.body)
            if cycle.disconnected or self._try_fast(method, raw_path, query, body, cycle):
                return
            # the ASGI app answers it, with its whole body waiting
            cycle.scope = self._scope(method, raw_path, query, version)
            self.queue.append(cycle)
            return
        cycle.wake()

    # ---- requests --------------------------------------------------------------------------

    def run_queue(self) -> None:
        """Start queued requests while none is being answered; a fast app finishes them all."""
        self.in_data = True
        try:
            while self.cycle is None and self.queue and not self.closed:
                cycle = self.queue.popleft()
                self.cycle = cycle
                self._start(cycle)
        finally:
            self.in_data = False
        self.maybe_resume_reading()

    def _start(self, cycle: _Cycle) -> None:
        ctx = contextvars.copy_context()
        if self.state.start == "task":
            self._spawn(self._run_app(cycle), ctx)
            return
        assert cycle.scope is not None
        coro = self.state.app(cycle.scope, cycle.receive, cycle.send)
        if not isinstance(coro, Coroutine):  # an awaitable that is not a coroutine: no eager step
            self._spawn(self._await_app(cycle, coro), ctx)
            return
        suspended, yielded = ctx.run(self._first_step, cycle, coro)
        if suspended:
            cycle.flush_head()
            self._spawn(self._continue_app(cycle, coro, yielded), ctx)

    def _first_step(self, cycle: _Cycle, coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
        """Run the app up to its first suspension: (True, what it yielded), or (False, None) if done."""
        self.stepping = cycle
        try:
            yielded = coro.send(None)
        except StopIteration:
            cycle.app_finished(None)
            return False, None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            cycle.app_finished(exc)
            return False, None
        finally:
            self.stepping = None
        return True, yielded

    def _spawn(self, coro: Coroutine[Any, Any, None], ctx: contextvars.Context) -> None:
        tasks = self.state.tasks
        task = self.state.loop.create_task(coro, context=ctx)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run_app(self, cycle: _Cycle) -> None:
        assert cycle.scope is not None
        coro = self.state.app(cycle.scope, cycle.receive, cycle.send)
        if not isinstance(coro, Coroutine):
            await self._await_app(cycle, coro)
            return
        suspended, yielded = self._first_step(cycle, coro)
        if suspended:
            cycle.flush_head()
            await self._continue_app(cycle, coro, yielded)

    async def _await_app(self, cycle: _Cycle, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        except BaseException as exc:
            cycle.app_finished(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            cycle.app_finished(None)

    async def _continue_app(self, cycle: _Cycle, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        await self._await_app(cycle, _drive(cycle, coro, yielded))

    def response_done(self, cycle: _Cycle) -> None:
        """The last byte of `cycle`'s answer is written: close, or go on with the next request."""
        if cycle is self.cycle:
            self.cycle = None
        self.touched = True
        self.state.answered()
        if self.parsing is cycle:
            # Answered before its body fully arrived (a 404 to a big POST): drop what is
            # buffered, so reading resumes below and the rest is skipped as it arrives.
            cycle.body = []
            cycle.body_size = 0
        if not cycle.keep_alive or self.state.stopping:
            self.queue.clear()
            self.transport.close()
            return
        if self.queue:
            if not self.in_data:
                self.state.loop.call_soon(self.run_queue)
        elif self.eof:
            self.transport.close()
        else:
            self.maybe_resume_reading()

    # ---- flow control ----------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def maybe_resume_reading(self) -> None:
        if not self.read_paused or self.closed:
            return
        parsing = self.parsing
        if len(self.queue) <= MAX_PIPELINE // 2 and (parsing is None or parsing.body_size <= READ_HIGH_WATER):
            self.read_paused = False
            self.transport.resume_reading()

    # ---- errors, timeouts, shutdown --------------------------------------------------------

    def _bad_request(self) -> None:
        parsing = self.parsing
        self.queue.clear()
        self.parsing = None
        if self.cycle is not None:  # finish the answer in progress, then close
            self.cycle.keep_alive = False
            if parsing is self.cycle:
                # its body broke off: the app waiting in receive() hears a disconnect (not
                # silence), and the connection ends, as no valid answer can follow garbage
                self.cycle.disconnected = True
                self.cycle.wake()
                self.transport.close()
                return
            self._pause_reading()
            return
        self.transport.write(_plain_response(400, b"Invalid HTTP request received.", self.state.date_line))
        self.transport.close()

    def _too_large(self, cycle: _Cycle) -> None:
        """A body over the server's limit: 413 if nothing is being answered yet, then close."""
        cycle.disconnected = True
        cycle.wake()
        if self.cycle is None or self.cycle is cycle:
            if not cycle.started:
                self.transport.write(_plain_response(413, b"Request Entity Too Large", self.state.date_line))
        self.queue.clear()
        self.parsing = None
        self.transport.close()

    def tick(self, interval: float) -> None:
        """Called by the server's ticker: close a connection that stayed idle for keep_alive_s."""
        if self.cycle is not None or self.queue or self.touched:
            self.touched = False
            self.idle_s = 0.0
            return
        self.idle_s += interval
        if self.idle_s >= self.state.keep_alive_s and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful stop: close when idle, else after the answer in progress."""
        self.queue.clear()
        if self.cycle is None:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def abort(self) -> None:
        for cycle in (self.cycle, self.parsing):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.transport.abort()


async def serve_asgi(
    app: ASGIApp,
    sockets: list[socket.socket],
    *,
    keep_alive_s: float,
    stop: asyncio.Event,
    graceful_s: float = 1.0,
    max_body_bytes: int = 64 << 20,
    date_header: bool = True,
    start: StartMode = "task",
    backlog: int = 2048,
) -> None:
    """Serve `app` on the bound, listening `sockets` until `stop` is set, then stop gracefully.

    Graceful stop: no new connections; idle ones close at once; an answer in progress may finish
    within `graceful_s` (its connection then closes); after that, the apps still running are
    cancelled and their connections aborted. `max_body_bytes` (negative: no limit) caps one
    request body: over it, 413 and close.
    """
    loop = asyncio.get_running_loop()
    state = _ServerState(
        app, keep_alive_s=keep_alive_s, max_body_bytes=max_body_bytes, date_header=date_header, start=start
    )
    servers: list[asyncio.AbstractServer] = []
    interval = max(0.05, min(1.0, keep_alive_s / 4))
    ticker: asyncio.Task[None] | None = None

    async def tick_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            state.tick(interval)

    try:
        for sock in sockets:
            sock.setblocking(False)
            servers.append(await loop.create_server(lambda: HttpProtocol(state), sock=sock, backlog=backlog))
        ticker = loop.create_task(tick_forever())
        await stop.wait()
    finally:
        state.stopping = True
        for srv in servers:
            srv.close()
        for conn in list(state.connections):
            conn.shutdown()
        if state.connections:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.all_closed.wait(), graceful_s)
        for conn in list(state.connections):
            conn.abort()
        for task in list(state.tasks):
            task.cancel()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=1.0)
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
