"""/v2/keys: parse, turn into a store command (or a local read or a watch), render.

Invariant: nothing here changes state except through `backend.propose`; every failure is
answered with etcd's error JSON, never a 500 traceback. Must not import raft or app.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from store.apply import Result
from store.commands import (
    Command,
    V2CompareAndDelete,
    V2CompareAndSwap,
    V2Create,
    V2Delete,
    V2QuorumGet,
    V2Set,
    V2Update,
)
from store.errors import (
    CompareFailed,
    DirNotEmpty,
    EventIndexCleared,
    KeyNotFound,
    NodeExists,
    NotADir,
    NotAFile,
    RootReadOnly,
    ServerError,
    StoreError,
)
from store.later import Later
from store.v2.event import Event, NodeView
from store.v2.watch import Watcher
from v2api.backend import Backend
from v2api.http import (
    CT_JSON,
    Headers,
    Receive,
    Scope,
    Send,
    go_framed,
    method_not_allowed,
    read_body,
    respond,
)
from v2api.params import (
    FORM_URLENCODED,
    MAX_FORM_BYTES,
    FormError,
    KeyRequest,
    RequestError,
    expire_ns_for,
    go_unescape,
    parse_form,
    parse_key_request,
    parse_media_type,
    store_path,
)
from v2api.render import V2_STATUS, error_json, event_json, strip_prefix

ALLOW = "HEAD,GET,PUT,POST,DELETE"
Answer = tuple[int, Headers, bytes]  # status, headers (no content-length), body
WaitAnswer = tuple[int, Headers, "asyncio.Future[bytes]"]  # a long poll: the body comes later

STORE_ERROR_CODES: dict[type[StoreError], int] = {
    KeyNotFound: 100,
    CompareFailed: 101,
    NotAFile: 102,
    NotADir: 104,
    NodeExists: 105,
    RootReadOnly: 107,
    DirNotEmpty: 108,
    EventIndexCleared: 401,
}


def _plain_set(key_path: str, query: bytes, content_type: str | None, body: bytes) -> KeyRequest | None:
    """The commonest write, a PUT whose form is a body of just `value=...`: the KeyRequest that
    parse_form and parse_key_request give it, found without them; None for any other request
    (or a malformed one: the general path reports the error)."""
    if query or not body.startswith(b"value=") or b"&" in body or b";" in body or len(body) > MAX_FORM_BYTES:
        return None
    if parse_media_type(content_type or "") != (FORM_URLENCODED, None):
        return None
    try:
        value = go_unescape(body[6:].decode("utf-8", "surrogateescape"))
    except FormError:
        return None
    return KeyRequest(method="PUT", path=store_path(key_path), value=value)


class KeysHandler:
    def __init__(self, backend: Backend, answer_prefix: Headers | None = None) -> None:
        self.backend = backend
        # Headers the access layer puts before every answer (CORS): fast answers carry them.
        self._answer_prefix: Headers = list(answer_prefix or ())
        self._cluster_header = (b"x-etcd-cluster-id", format(backend.cluster_id, "x").encode())
        # Recursive reads of a directory (confd, service discovery) repeat between writes:
        # (path, sorted) -> (store index, event, rendered body), valid while the store index
        # is unchanged (every change of the store moves it) and the listing holds no TTL
        # (remaining TTLs are computed at read time).
        self._listing_cache: dict[tuple[str, bool], tuple[int, Event, bytes]] = {}
        self._listing_bytes = 0  # rendered bodies held, against LISTING_CACHE_BYTES
        # Whole answers to plain GETs (see fast_get): (key path, query) ->
        # (store index, raft index, term, answer, the store stat the read counts in).
        self._answer_cache: dict[tuple[str, bytes], tuple[int, int, int, Answer, str]] = {}

    # ---- answers ---------------------------------------------------------------------------

    def _event_headers(self, etcd_index: int) -> Headers:
        """The headers of an answer that shows the store (an event, a listing, a watch)."""
        index, term = self.backend.raft_index_term()
        return [
            CT_JSON,
            self._cluster_header,
            (b"x-etcd-index", b"%d" % etcd_index),
            (b"x-raft-index", b"%d" % index),
            (b"x-raft-term", b"%d" % term),
        ]

    def _error_answer(self, code: int, cause: str, index: int) -> Answer:
        headers: Headers = [CT_JSON, self._cluster_header, (b"x-etcd-index", b"%d" % index)]
        return V2_STATUS.get(code, 400), headers, error_json(code, cause, index)

    async def _error(self, send: Send, code: int, cause: str, index: int, head: bool) -> None:
        await respond(send, *self._error_answer(code, cause, index), head=head)

    async def _store_error(self, send: Send, err: StoreError, head: bool) -> None:
        await respond(send, *self._store_error_answer(err), head=head)

    def _event_answer(self, e: Event, req: KeyRequest, body: bytes | None = None) -> Answer:
        status = 201 if e.action == "create" or (e.action == "set" and e.prev_node is None) else 200
        no_value = req.no_value_on_success and e.action in ("set", "create", "update", "compareAndSwap")
        headers = self._event_headers(e.etcd_index)
        return status, headers, body if body is not None else event_json(e, no_value)

    def _store_error_answer(self, err: StoreError) -> Answer:
        code = STORE_ERROR_CODES[type(err)]
        cause = err.cause if isinstance(err, CompareFailed) else strip_prefix(err.cause)
        headers: Headers = [CT_JSON, self._cluster_header, (b"x-etcd-index", b"%d" % err.index)]
        return V2_STATUS.get(code, 400), headers, error_json(code, cause, err.index)

    def local_get(self, req: KeyRequest) -> Answer:
        """A GET answered from this member's own store (no quorum, no wait): never suspends."""
        try:
            if req.recursive:
                listing, cached_body = self._local_listing(req)
                return self._event_answer(listing, req, cached_body)
            return self._event_answer(self.backend.v2.get(req.path, False, req.sorted), req)
        except StoreError as err:
            return self._store_error_answer(err)

    def fast_get(self, key_path: str, query: bytes) -> Answer | WaitAnswer | None:
        """The whole answer (with its content-length) to a plain local GET, or None when it
        needs the general path (a watch, a quorum read, a malformed request: __call__).

        Answers are kept while the store index, the raft index and the term are unchanged
        (every change of the store moves the first; the headers show the other two), unless
        they show a TTL, which is computed at read time.
        """
        cache_key = (key_path, query)
        store = self.backend.v2
        index, term = self.backend.raft_index_term()
        hit = self._answer_cache.get(cache_key)
        if hit is not None and hit[0] == store.current_index and hit[1] == index and hit[2] == term:
            store.stats[hit[4]] += 1  # counted as the read it stands for
            return hit[3]
        try:
            form = parse_form("GET", query.decode("utf-8", "surrogateescape"), None, b"") if query else {}
            req = parse_key_request("GET", key_path, form)
        except (FormError, RequestError):
            return None
        if req.quorum or req.stream:
            return None
        if req.wait:
            return self._fast_wait(req)
        stamp = store.current_index
        answer = self._framed(self.local_get(req))
        status, _, body = answer
        stat = "getsSuccess" if status == 200 else "getsFail"
        if status != 200 or not _has_ttl_marker(body):
            if len(self._answer_cache) >= ANSWER_CACHE_MAX:
                self._answer_cache.clear()
            self._answer_cache[cache_key] = (stamp, index, term, answer, stat)
        return answer

    def _fast_wait(self, req: KeyRequest) -> WaitAnswer | Answer | None:
        """A long-poll watch without a task: the head now, the event as the body Future's
        result (b"" when the watcher is closed first); the Future is cancelled by the server
        when the client leaves, and the watcher goes with it."""
        try:
            w = self.backend.v2.watch(req.path, req.recursive, False, req.wait_index)
        except StoreError:
            return None  # EventIndexCleared: __call__ answers it (the scan changed nothing)
        headers = [*self._answer_prefix, *self._event_headers(w.start_index)]
        if w.events:  # answered from history: the whole answer now, chunked like __call__'s
            return 200, headers, event_json(w.events.popleft())
        body = _WatchBody(w, loop=asyncio.get_running_loop())

        def wake() -> None:
            if body.done():
                return
            if w.events:
                body.set_result(event_json(w.events.popleft()))
                w.remove()
            elif w.closed:
                body.set_result(b"")

        w.wake = wake
        return 200, headers, body

    def fast_write(
        self, method: str, key_path: str, query: bytes, content_type: str | None, body: bytes
    ) -> Later[Answer] | None:
        """A PUT, POST or DELETE proposed without a task (this member leads): the whole answer
        to come, or None when it needs the general path (__call__)."""
        req = _plain_set(key_path, query, content_type, body) if method == "PUT" else None
        if req is None:
            try:
                form = parse_form(method, query.decode("utf-8", "surrogateescape"), content_type, body)
                req = parse_key_request(method, key_path, form)
            except (FormError, RequestError):
                return None
        answer: Later[Answer] = Later()

        def applied(result: Result | ServerError) -> None:
            if answer.done():
                return
            try:
                if isinstance(result, ServerError):
                    answer.set_result(self._framed(self._error_answer(300, result.cause, 0)))
                else:
                    answer.set_result(self._framed(self._write_answer(result, req)))
            except Exception as exc:  # a bug: the server answers 500 and logs it
                answer.set_exception(exc)

        if not self.backend.propose_local(self._command(req), applied):
            return None
        return answer

    def _write_answer(self, result: Result, req: KeyRequest) -> Answer:
        if isinstance(result, StoreError):
            return self._store_error_answer(result)
        if isinstance(result, Event):
            return self._event_answer(result, req)
        return self._error_answer(300, "etcdserver: unexpected apply result", 0)  # pragma: no cover

    def _framed(self, answer: Answer) -> Answer:
        status, headers, body = answer
        return status, [*self._answer_prefix, *go_framed(status, headers, body)], body

    def _local_listing(self, req: KeyRequest) -> tuple[Event, bytes | None]:
        """A local recursive read, answered from the listing cache when nothing changed since."""
        store = self.backend.v2
        key = (req.path, req.sorted)
        hit = self._listing_cache.get(key)
        if hit is not None and hit[0] == store.current_index:
            store.stats["getsSuccess"] += 1  # counted as the read it stands for
            return hit[1], hit[2]
        e = store.get(req.path, True, req.sorted)
        if _has_ttl(e.node):
            return e, None
        body = event_json(e)
        if (
            len(self._listing_cache) >= LISTING_CACHE_MAX
            or self._listing_bytes + len(body) > LISTING_CACHE_BYTES
        ):
            self._listing_cache.clear()
            self._listing_bytes = 0
        if len(body) <= LISTING_CACHE_BYTES:
            # Only the rendered body is kept: the event without its listing (the answer needs
            # its action and index; a tree of views would double the memory).
            slim = Event(e.action, replace(e.node, nodes=None), e.prev_node, e.etcd_index)
            self._listing_cache[key] = (store.current_index, slim, body)
            self._listing_bytes += len(body)
        return e, body

    # ---- entry -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send, key_path: str) -> None:
        method = str(scope["method"])
        if method not in ("HEAD", "GET", "PUT", "POST", "DELETE"):
            await method_not_allowed(send, ALLOW)
            return
        head = method == "HEAD"
        body = b""
        content_type: str | None = None
        if method in ("PUT", "POST"):
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value.decode("latin-1")
                    break
            body, too_big = await read_body(receive, MAX_FORM_BYTES)
            if too_big:
                if parse_media_type(content_type or "")[0] == FORM_URLENCODED:
                    await self._error(send, 210, "http: POST too large", 0, head)
                    return
                body = b""  # Go never reads a body it will not parse
        query = scope.get("query_string", b"")
        assert isinstance(query, bytes)
        try:
            form = parse_form(method, query.decode("utf-8", "surrogateescape"), content_type, body)
            req = parse_key_request(method, key_path, form)
        except FormError as exc:
            await self._error(send, 210, str(exc), 0, head)
            return
        except RequestError as exc:
            await self._error(send, exc.code, exc.cause, 0, head)
            return
        try:
            if method in ("GET", "HEAD"):
                if req.quorum:
                    result = await self.backend.propose(V2QuorumGet(req.path, req.recursive, req.sorted))
                elif req.wait:
                    await self._watch(receive, send, req)
                    return
                else:
                    await respond(send, *self.local_get(req), head=head)
                    return
            else:
                result = await self.backend.propose(self._command(req))
        except StoreError as err:
            await self._store_error(send, err, head)
            return
        except ServerError as err:
            await self._error(send, 300, err.cause, 0, head)
            return
        await respond(send, *self._write_answer(result, req), head=head)

    def _command(self, req: KeyRequest) -> Command:
        expire_ns = expire_ns_for(req.ttl, self.backend.now_ns()) if req.ttl is not None else None
        if req.method == "POST":
            return V2Create(req.path, req.value, req.dir, True, expire_ns)
        if req.method == "DELETE":
            if req.prev_index > 0 or req.prev_value:
                return V2CompareAndDelete(req.path, req.prev_value, req.prev_index)
            return V2Delete(req.path, req.dir, req.recursive)
        # PUT
        if req.prev_exist is not None:
            if req.prev_exist:
                if req.prev_index == 0 and req.prev_value == "":
                    return V2Update(req.path, req.value, expire_ns, req.refresh)
                return V2CompareAndSwap(
                    req.path, req.prev_value, req.prev_index, req.value, expire_ns, req.refresh
                )
            return V2Create(req.path, req.value, req.dir, False, expire_ns)
        if req.prev_index > 0 or req.prev_value:
            return V2CompareAndSwap(
                req.path, req.prev_value, req.prev_index, req.value, expire_ns, req.refresh
            )
        return V2Set(req.path, req.value, req.dir, expire_ns, req.refresh)

    # ---- watch -----------------------------------------------------------------------------

    async def _watch(self, receive: Receive, send: Send, req: KeyRequest) -> None:
        store = self.backend.v2
        w = store.watch(req.path, req.recursive, req.stream, req.wait_index)  # may raise EventIndexCleared
        wake = asyncio.Event()
        w.wake = wake.set
        if w.events:
            wake.set()

        async def watch_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    w.remove()
                    return

        listener = asyncio.get_running_loop().create_task(watch_disconnect())
        try:
            headers = self._event_headers(w.start_index)
            # Headers go out at once: clients see 200 while the watch is still waiting.
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while True:
                while w.events:
                    e = w.events.popleft()
                    await send({"type": "http.response.body", "body": event_json(e), "more_body": True})
                    if not req.stream:
                        await send({"type": "http.response.body", "body": b""})
                        return
                if w.closed:
                    await send({"type": "http.response.body", "body": b""})
                    return
                wake.clear()
                await wake.wait()
        except OSError:
            return
        finally:
            w.remove()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


class _WatchBody(asyncio.Future[bytes]):
    """A long poll's body: cancelled (the client left), it takes its watcher away with it.
    (Not a done-callback: a fan-out to thousands of watchers would schedule one each.)"""

    def __init__(self, watcher: Watcher, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._watcher = watcher

    def cancel(self, msg: object = None) -> bool:
        self._watcher.remove()
        return super().cancel(msg)


LISTING_CACHE_MAX = 64
LISTING_CACHE_BYTES = 32 << 20  # rendered listing bodies kept, at most
ANSWER_CACHE_MAX = 1024  # with ANSWER_CACHE_BODY_MAX: at most ~4 MiB kept
ANSWER_CACHE_BODY_MAX = 4096


def _has_ttl_marker(body: bytes) -> bool:
    """Whether an answer may show a remaining TTL (then it is never reused), or is too big to keep."""
    return len(body) > ANSWER_CACHE_BODY_MAX or b'"ttl":' in body  # the length first: a cheap test


def _has_ttl(n: NodeView) -> bool:
    if n.expire_ns is not None:
        return True
    return any(_has_ttl(c) for c in n.nodes or ())
