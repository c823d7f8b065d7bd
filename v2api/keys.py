"""/v2/keys: parse, turn into a store command (or a local read or a watch), render.

Invariant: nothing here changes state except through `backend.propose`; every failure is
answered with etcd's error JSON, never a 500 traceback. Must not import raft or app.
"""

from __future__ import annotations

import asyncio
import contextlib

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
from store.v2.event import Event, NodeView
from v2api.backend import Backend
from v2api.http import CT_JSON, Headers, Receive, Scope, Send, method_not_allowed, read_body, respond
from v2api.params import (
    MAX_FORM_BYTES,
    FormError,
    KeyRequest,
    RequestError,
    expire_ns_for,
    parse_form,
    parse_key_request,
    parse_media_type,
)
from v2api.render import V2_STATUS, error_json, event_json, strip_prefix

ALLOW = "HEAD,GET,PUT,POST,DELETE"

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


class KeysHandler:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._cluster_header = (b"x-etcd-cluster-id", format(backend.cluster_id, "x").encode())
        # Recursive reads of a directory (confd, service discovery) repeat between writes:
        # (path, sorted) -> (store index, event, rendered body), valid while the store index
        # is unchanged (every change of the store moves it) and the listing holds no TTL
        # (remaining TTLs are computed at read time).
        self._listing_cache: dict[tuple[str, bool], tuple[int, Event, bytes]] = {}

    # ---- answers ---------------------------------------------------------------------------

    def _raft_headers(self) -> Headers:
        index, term = self.backend.raft_index_term()
        return [(b"x-raft-index", str(index).encode()), (b"x-raft-term", str(term).encode())]

    async def _error(self, send: Send, code: int, cause: str, index: int, head: bool) -> None:
        headers: Headers = [CT_JSON, self._cluster_header, (b"x-etcd-index", str(index).encode())]
        await respond(send, V2_STATUS.get(code, 400), headers, error_json(code, cause, index), head=head)

    async def _store_error(self, send: Send, err: StoreError, head: bool) -> None:
        code = STORE_ERROR_CODES[type(err)]
        cause = err.cause if isinstance(err, CompareFailed) else strip_prefix(err.cause)
        await self._error(send, code, cause, err.index, head)

    async def _event(
        self, send: Send, e: Event, req: KeyRequest, head: bool, body: bytes | None = None
    ) -> None:
        status = 201 if e.action == "create" or (e.action == "set" and e.prev_node is None) else 200
        no_value = req.no_value_on_success and e.action in ("set", "create", "update", "compareAndSwap")
        headers: Headers = [
            CT_JSON,
            self._cluster_header,
            (b"x-etcd-index", str(e.etcd_index).encode()),
            *self._raft_headers(),
        ]
        await respond(send, status, headers, body if body is not None else event_json(e, no_value), head=head)

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
        if len(self._listing_cache) >= LISTING_CACHE_MAX:
            self._listing_cache.clear()
        self._listing_cache[key] = (store.current_index, e, body)
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
                if parse_media_type(content_type or "")[0] == "application/x-www-form-urlencoded":
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
                elif req.recursive:
                    listing, cached_body = self._local_listing(req)
                    await self._event(send, listing, req, head, cached_body)
                    return
                else:
                    result = self.backend.v2.get(req.path, req.recursive, req.sorted)
            else:
                result = await self.backend.propose(self._command(req))
        except StoreError as err:
            await self._store_error(send, err, head)
            return
        except ServerError as err:
            await self._error(send, 300, err.cause, 0, head)
            return
        if isinstance(result, StoreError):
            await self._store_error(send, result, head)
        elif isinstance(result, Event):
            await self._event(send, result, req, head)
        else:  # pragma: no cover - every v2 command yields an event or an error
            await self._error(send, 300, "etcdserver: unexpected apply result", 0, head)

    def _command(self, req: KeyRequest) -> Command:
        expire_ns = expire_ns_for(req.ttl, self.backend.now_ns())
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
            headers: Headers = [
                CT_JSON,
                self._cluster_header,
                (b"x-etcd-index", str(w.start_index).encode()),
                *self._raft_headers(),
            ]
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


LISTING_CACHE_MAX = 64


def _has_ttl(n: NodeView) -> bool:
    if n.expire_ns is not None:
        return True
    return any(_has_ttl(c) for c in n.nodes or ())
