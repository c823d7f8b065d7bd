"""The client-port ASGI application: etcd's access layer, Go mux routing, small endpoints.

Invariant: every answer passes through the access layer, so CORS headers, the OPTIONS
short-circuit, Go's 301 path cleaning and Go's plain-text 404/405 apply to every path exactly
as etcd 3.4 applies them. /v2/keys is handed to v2api; nothing here touches the store.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, cast
from urllib.parse import quote

import orjson

from app import faults
from app.version import ETCD_VERSION, ETCDPY_VERSION
from store.errors import MembershipError, ServerError
from store.later import Later
from v2api.backend import Backend, MemberInfo
from v2api.http import (
    CT_JSON,
    CT_TEXT,
    NOSNIFF,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    json_message,
    method_not_allowed,
    not_found,
    read_body,
    respond,
)
from v2api.keys import Answer, KeysHandler, WaitAnswer
from v2api.params import go_unescape
from v2api.render import go_json
from v3gateway.backend import V3Backend
from v3gateway.routes import V3Gateway

log = logging.getLogger("etcdpy.http")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
CORS_HEADERS: Headers = [
    (b"access-control-allow-headers", b"accept, content-type, authorization"),
    (b"access-control-allow-methods", b"POST, GET, OPTIONS, PUT, DELETE"),
]
CORS_ANY_HEADERS: Headers = [*CORS_HEADERS, (b"access-control-allow-origin", b"*")]
# Go's url.URL.EscapedPath keeps these unescaped in a path.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


def go_clean_path(p: str) -> str:
    """Go net/http cleanPath: path.Clean, keeping a trailing slash."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    cleaned = "/" + "/".join(parts)
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class ClientApp:
    def __init__(
        self,
        backend: Backend,
        *,
        cors: tuple[str, ...],
        enable_v2: bool,
        client_urls: tuple[str, ...],
        v3: V3Backend | None = None,
    ) -> None:
        self.backend = backend
        if v3 is None and hasattr(backend, "v3_range"):
            v3 = cast(V3Backend, backend)  # EtcdServer with V3BackendMixin serves both APIs
        self.cors_any = "*" in cors
        self.v3 = V3Gateway(v3, CORS_ANY_HEADERS if self.cors_any else None) if v3 is not None else None
        self.cors_origins = frozenset(cors)
        self.enable_v2 = enable_v2
        self.keys = KeysHandler(backend, CORS_ANY_HEADERS if self.cors_any else None)
        self.cluster_header = (b"x-etcd-cluster-id", format(backend.cluster_id, "x").encode())
        self.client_urls = client_urls

    def _cors_headers(self, scope: Scope) -> Headers:
        if self.cors_any:
            return CORS_ANY_HEADERS
        for name, value in scope["headers"]:
            if name == b"origin":
                if value.decode("latin-1") in self.cors_origins:
                    return [*CORS_HEADERS, (b"access-control-allow-origin", value)]
                break
        return []

    def fast_response(
        self, method: str, raw_path: bytes, query: bytes, headers: Headers, body: bytes
    ) -> Answer | WaitAnswer | Later[Answer] | None:
        """The answer to a request that needs no task, or None for __call__.

        app/httpserver.py asks this first (other ASGI servers never do): a plain GET of
        /v2/keys/... and a v3 range are answered at once, a v2 PUT/POST/DELETE and a v3 put on a
        leader through a Future, a v2 long poll (wait=true, not stream) with its head at once
        and its body through a Future. Only
        paths that need no cleaning, unescaping or CORS origin matching qualify, and the answer
        is byte for byte the one __call__ would give.
        """
        if b"%" in raw_path or b"//" in raw_path or b"/." in raw_path:
            return None
        if self.cors_origins and not self.cors_any:
            return None
        if raw_path.startswith(b"/v3/"):
            if method != "POST" or self.v3 is None:
                return None
            for name, _ in headers:
                if name == b"x-http-method-override":
                    return None
            return self.v3.fast_unary(raw_path.decode("latin-1"), body)
        if not raw_path.startswith(b"/v2/keys") or not self.enable_v2:
            return None
        key_path = raw_path[8:].decode("utf-8", "surrogateescape")
        if key_path and key_path[0] != "/":
            return None  # /v2/keysfoo: not the keys handler
        if method == "GET":
            return self.keys.fast_get(key_path, query)
        if method in ("PUT", "POST", "DELETE"):
            content_type = None
            for name, value in headers:
                if name == b"content-type":
                    content_type = value.decode("latin-1")
                    break
            return self.keys.fast_write(method, key_path, query, content_type, body)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._dispatch(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._dispatch(scope, receive, tracking_send)
        except OSError:
            return  # the client went away mid-answer
        except Exception:
            # A bug must never surface as a traceback page: log it, answer like etcd's 500.
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await respond(send, 500, [CT_TEXT, NOSNIFF], b"Internal Server Error\n")

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        has_escape = b"%" in raw_path
        if has_escape and _BAD_ESCAPE.search(raw_path.split(b"?", 1)[0]):
            # Go's server rejects the request line before any handler (or CORS) runs.
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [CT_TEXT, (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": b"400 Bad Request"})
            return
        cors = self._cors_headers(scope)
        if cors:
            inner_send = send

            async def send_with_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*cors, *message["headers"]]
                await inner_send(message)

            send = send_with_cors
        method: str = scope["method"]
        if method == "OPTIONS":
            await respond(send, 200, [], b"")
            return
        # Decode the path ourselves: Go keeps invalid UTF-8 bytes distinct, uvicorn would fold them.
        path = raw_path.split(b"?", 1)[0].decode("utf-8", "surrogateescape")
        if has_escape:
            path = go_unescape(path, plus_is_space=False)
        # Cleaning changes only paths with empty, "." or ".." segments (the common path has none)
        cleaned = go_clean_path(path) if ("//" in path or "/." in path or not path.startswith("/")) else path
        if cleaned != path:
            await self._redirect(scope, send, cleaned)
            return
        await self._route(scope, receive, send, path, method)

    async def _redirect(self, scope: Scope, send: Send, cleaned: str) -> None:
        location = quote(cleaned, safe=_PATH_SAFE)
        qs: bytes = scope.get("query_string", b"")
        if qs:
            location += "?" + qs.decode("latin-1")
        headers: Headers = [(b"location", location.encode("latin-1"))]
        if scope["method"] in ("GET", "HEAD"):
            body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
            await respond(
                send,
                301,
                [(b"content-type", b"text/html; charset=utf-8"), *headers],
                body,
                head=scope["method"] == "HEAD",
            )
        else:
            await respond(send, 301, headers, b"")

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str, method: str) -> None:
        # etcd 3.4 still serves the gateway under /v3beta/ (not /v3alpha/: that is a v2-mux 404).
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/") :]
        if path.startswith("/v3/") and self.v3 is not None:
            await self.v3(scope, receive, send, path)
            return
        if path.startswith("/v2/"):
            if not self.enable_v2:
                await not_found(send)
                return
            if path == "/v2/keys" or path.startswith("/v2/keys/"):
                await self.keys(scope, receive, send, path[len("/v2/keys") :])
                return
            if path == "/v2/members" or path.startswith("/v2/members/"):
                await self._members(scope, receive, send, path[len("/v2/members") :], method)
                return
            if path == "/v2/machines":
                if method not in ("GET", "HEAD"):
                    await method_not_allowed(send, "GET,HEAD")
                    return
                urls = sorted(u for m in self.backend.members() for u in m.client_urls)  # as etcd does
                body = ", ".join(urls).encode()
                await respond(send, 200, [CT_TEXT], body, head=method == "HEAD")
                return
            if path in ("/v2/stats/self", "/v2/stats/leader", "/v2/stats/store"):
                if method != "GET":
                    await method_not_allowed(send, "GET")
                    return
                await self._stats(send, path.rsplit("/", 1)[1])
                return
            await not_found(send)
            return
        if path == "/version":
            if method != "GET":
                await method_not_allowed(send, "GET")
                return
            body = go_json(
                {
                    "etcdserver": ETCD_VERSION,
                    "etcdcluster": self.backend.cluster_version() or "not_decided",
                }
            )
            # etcdpy's own version rides in a header: clients such as etcd3-py build a record
            # from exactly etcd's two body fields and fail on any extra one.
            await respond(send, 200, [CT_JSON, (b"x-etcdpy-version", ETCDPY_VERSION.encode())], body)
            return
        if path == "/health":
            if method != "GET":
                await method_not_allowed(send, "GET")
                return
            if await self.backend.health():
                await respond(send, 200, [CT_TEXT], b'{"health":"true"}')
            else:
                await respond(send, 503, [CT_TEXT, NOSNIFF], b'{"health":"false"}\n')
            return
        if path == "/metrics":
            await respond(
                send,
                200,
                [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                self._metrics(),
                head=method == "HEAD",
            )
            return
        if path == "/debug/faults" and faults.FAULTS.enabled:  # only with --unsafe-test-faults
            await faults.serve_http(receive, send, method)
            return
        if path == "/debug/vars":
            if method != "GET":
                await method_not_allowed(send, "GET")
                return
            await respond(
                send,
                200,
                [(b"content-type", b"application/json; charset=utf-8")],
                orjson.dumps({"etcdpy": {"version": ETCDPY_VERSION}}) + b"\n",
            )
            return
        if path == "/config/local/log":
            if method != "PUT":
                await method_not_allowed(send, "PUT")
                return
            await read_body(receive, 1 << 16)
            await respond(send, 204, [], b"")
            return
        await not_found(send)

    async def _members(self, scope: Scope, receive: Receive, send: Send, rest: str, method: str) -> None:
        if method not in ("GET", "POST", "DELETE", "PUT"):
            await method_not_allowed(send, "GET,POST,DELETE,PUT")
            return
        ch = [self.cluster_header]
        member_id = rest.lstrip("/")
        if method == "GET":
            if member_id == "":
                body = go_json(
                    {"members": [_member_obj(m) for m in sorted(self.backend.members(), key=lambda m: m.id)]}
                )
                await respond(send, 200, [CT_JSON, *ch], body + b"\n")
            elif member_id == "leader":
                lead = self.backend.leader_id()
                for m in self.backend.members():
                    if m.id == lead:
                        await respond(send, 200, [CT_JSON, *ch], go_json(_member_obj(m)) + b"\n")
                        return
                await json_message(send, 503, "During election", ch)
            else:
                await json_message(send, 404, "Not found", ch)
            return
        if method in ("DELETE", "PUT") and member_id == "":
            await method_not_allowed(send, None, ch)
            return
        body, _ = await read_body(receive, 1 << 20)
        if method in ("POST", "PUT"):
            ctype = ""
            for name, value in scope["headers"]:
                if name == b"content-type":
                    ctype = value.decode("latin-1")
                    break
            media = ctype.split(";", 1)[0].strip().lower()
            if media != "application/json":
                await json_message(send, 415, f"Bad Content-Type {ctype}, accept application/json", ch)
                return
            try:
                urls = _member_request_urls(orjson.loads(body))
            except (orjson.JSONDecodeError, ValueError) as exc:
                await json_message(send, 400, _go_json_error(body, exc), ch)
                return
            for u in urls:
                if not re.match(r"^(http|https|unix|unixs)://", u):
                    await json_message(send, 400, f"URL scheme must be http, https, unix, or unixs: {u}", ch)
                    return
        known = {format(m.id, "x"): m for m in self.backend.members()}
        if method in ("PUT", "DELETE") and member_id not in known:
            try:
                removed = self.backend.is_removed_member(int(member_id, 16))
            except ValueError:
                removed = False
            if removed:
                await json_message(send, 410, f"Member permanently removed: {member_id}", ch)
            else:
                await json_message(send, 404, f"No such member: {member_id}", ch)
            return
        try:
            if method == "POST":
                added = await self.backend.add_member(list(urls or ()), False)
                await respond(send, 201, [CT_JSON, *ch], go_json(_member_obj(added)) + b"\n")
                return
            if method == "PUT":
                await self.backend.update_member(known[member_id].id, list(urls or ()))
            else:
                await self.backend.remove_member(known[member_id].id)
        except MembershipError as exc:
            # etcd's v2 members handler: conflicts are 409, a removed ID 410, the rest 500
            if exc.kind in ("id_exists", "peer_url_exists"):
                await json_message(send, 409, exc.message, ch)
            elif exc.kind == "id_removed":
                await json_message(send, 410, f"Member permanently removed: {member_id}", ch)
            elif exc.kind == "id_not_found":
                await json_message(send, 404, f"No such member: {member_id}", ch)
            else:
                await json_message(send, 500, "Internal Server Error", ch)
            return
        except ServerError:
            await json_message(send, 500, "Internal Server Error", ch)
            return
        await respond(send, 204, ch, b"")

    async def _stats(self, send: Send, which: str) -> None:
        if which == "self":
            body = go_json(self.backend.self_stats())
        elif which == "leader":
            stats = self.backend.leader_stats()
            if stats is None:
                await json_message(send, 403, "not current leader")
                return
            body = go_json(stats)
        else:
            counters: dict[str, Any] = dict(self.backend.v2.stats)
            counters["watchers"] = self.backend.v2.hub.count
            body = go_json(counters)
        await respond(send, 200, [CT_JSON], body)

    def _metrics(self) -> bytes:
        index, term = self.backend.raft_index_term()
        lines = [
            "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.",
            "# TYPE etcd_server_has_leader gauge",
            f"etcd_server_has_leader {1 if self.backend.leader_id() else 0}",
            "# TYPE etcd_server_is_leader gauge",
            f"etcd_server_is_leader {1 if self.backend.leader_id() == self.backend.member_id else 0}",
            "# TYPE etcd_debugging_server_committed_index gauge",
            f"etcd_server_committed_index {index}",
            "# TYPE etcd_server_term gauge",
            f"etcd_server_term {term}",
            "# TYPE etcd_debugging_store_watchers gauge",
            f"etcd_debugging_store_watchers {self.backend.v2.hub.count}",
            f'etcd_server_version{{server_version="{ETCD_VERSION}"}} 1',
            f"process_start_time_seconds {time.time():.3f}",
        ]
        return ("\n".join(lines) + "\n").encode()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _member_obj(m: MemberInfo) -> dict[str, Any]:
    return {
        "id": format(m.id, "x"),
        "name": m.name,
        "peerURLs": list(m.peer_urls),
        "clientURLs": list(m.client_urls),
    }


_MEMBER_REQUEST_TYPE = 'struct { PeerURLs []string "json:\\"peerURLs\\"" }'


def _go_json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else "value"


def _member_request_urls(req: Any) -> list[str]:
    """etcd's v2 members handler: decode {"peerURLs": [...]} with Go's errors, then require URLs."""
    if not isinstance(req, dict):
        if req is None:
            raise ValueError("no valid URLs given")
        raise ValueError(
            f"json: cannot unmarshal {_go_json_type(req)} into Go value of type {_MEMBER_REQUEST_TYPE}"
        )
    urls = req.get("peerURLs")
    if urls is not None and not isinstance(urls, list):
        raise ValueError(
            f"json: cannot unmarshal {_go_json_type(urls)} into Go struct field .peerURLs of type []string"
        )
    for u in urls or ():
        if not isinstance(u, str) and u is not None:
            raise ValueError(
                f"json: cannot unmarshal {_go_json_type(u)} into Go struct field .peerURLs of type string"
            )
    if not urls:
        raise ValueError("no valid URLs given")
    return [u or "" for u in urls]


def _go_json_error(body: bytes, exc: Exception) -> str:
    """Approximate Go encoding/json's syntax error text for the common cases."""
    text = body.lstrip()
    if not text:
        return "unexpected end of JSON input"
    if isinstance(exc, ValueError) and not isinstance(exc, orjson.JSONDecodeError):
        return str(exc)
    if text[:1] == b"{":
        rest = text[1:].lstrip()
        if rest and rest[:1] not in (b'"', b"}"):
            return f"invalid character '{chr(rest[0])}' looking for beginning of object key string"
    if text[:1] not in b'{["-0123456789tfn':
        return f"invalid character '{chr(text[0])}' looking for beginning of value"
    return "unexpected end of JSON input"
