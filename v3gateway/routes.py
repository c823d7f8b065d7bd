"""The gateway's route table and the unary/stream runners (grpc-gateway 1.6.4 ServeMux).

Invariants: routes are exact paths, POST only; a known path with another method is 405
without Allow, anything else under /v3/ is 404 `Not Found\\n`. A unary request is decoded
(errors: 400, code 3, never reached gRPC), checked against the gRPC receive limit
(max-request-bytes + 512 KiB), handled, and answered with `Grpc-Metadata-Content-Type`; a
failure uses the unary error envelope. Must not import app, raft or v2api.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from store.errors import ServerError
from store.later import Later
from v3gateway import cluster, codec, kv, lease, maintenance, watch
from v3gateway.backend import V3Backend
from v3gateway.codec import MessageType, Obj, dumps
from v3gateway.common import GRPC_OVERHEAD_BYTES, etcd_headers
from v3gateway.errors import (
    Code,
    GrpcError,
    error_body,
    from_server_error,
    grpc_message_too_large,
    http_status,
    send_decode_error,
    send_unary_error,
)
from v3gateway.gojson import GoJSONError
from v3gateway.http import (
    CT_JSON,
    CT_TEXT,
    GO_CHUNK_THRESHOLD,
    GRPC_METADATA,
    NOSNIFF,
    BodyTooLarge,
    Headers,
    Receive,
    Scope,
    Send,
    header_value,
    read_body,
    respond,
)
from v3gateway.stream import RequestStream, ResponseStream

FastAnswer = tuple[int, Headers, bytes]
RANGE_CACHE_MAX: Final = 1024  # with the two limits below: at most ~5 MiB kept
RANGE_CACHE_BODY_MAX: Final = 1024
RANGE_CACHE_ANSWER_MAX: Final = 4096
Unary = Callable[[V3Backend, dict[str, Any]], Awaitable[Obj]]
Streaming = Callable[[V3Backend, RequestStream, ResponseStream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    request: MessageType
    unary: Unary | None = None
    stream: Streaming | None = None
    service: str = ""  # set for services etcdpy does not serve (auth, lock, election)


def _unimplemented(service: str) -> Route:
    return Route(codec.EMPTY_REQUEST, service=service)


_AUTH = _unimplemented("etcdserverpb.Auth")
_LOCK = _unimplemented("v3lockpb.Lock")
_ELECTION = _unimplemented("v3electionpb.Election")

ROUTES: Final[dict[str, Route]] = {
    "/v3/kv/range": Route(codec.RANGE_REQUEST, kv.range_),
    "/v3/kv/put": Route(codec.PUT_REQUEST, kv.put),
    "/v3/kv/deleterange": Route(codec.DELETE_RANGE_REQUEST, kv.delete_range),
    "/v3/kv/txn": Route(codec.TXN_REQUEST, kv.txn),
    "/v3/kv/compaction": Route(codec.COMPACTION_REQUEST, kv.compaction),
    "/v3/watch": Route(codec.WATCH_REQUEST, stream=watch.watch),
    "/v3/lease/grant": Route(codec.LEASE_GRANT_REQUEST, lease.grant),
    "/v3/lease/revoke": Route(codec.LEASE_ID_REQUEST, lease.revoke),
    "/v3/kv/lease/revoke": Route(codec.LEASE_ID_REQUEST, lease.revoke),
    "/v3/lease/keepalive": Route(codec.LEASE_ID_REQUEST, stream=lease.keepalive),
    "/v3/lease/timetolive": Route(codec.LEASE_TTL_REQUEST, lease.time_to_live),
    "/v3/kv/lease/timetolive": Route(codec.LEASE_TTL_REQUEST, lease.time_to_live),
    "/v3/lease/leases": Route(codec.EMPTY_REQUEST, lease.leases),
    "/v3/kv/lease/leases": Route(codec.EMPTY_REQUEST, lease.leases),
    "/v3/cluster/member/add": Route(codec.MEMBER_ADD_REQUEST, cluster.member_add),
    "/v3/cluster/member/remove": Route(codec.MEMBER_ID_REQUEST, cluster.member_remove),
    "/v3/cluster/member/update": Route(codec.MEMBER_UPDATE_REQUEST, cluster.member_update),
    "/v3/cluster/member/list": Route(codec.EMPTY_REQUEST, cluster.member_list),
    "/v3/cluster/member/promote": Route(codec.MEMBER_ID_REQUEST, cluster.member_promote),
    "/v3/maintenance/alarm": Route(codec.ALARM_REQUEST, maintenance.alarm),
    "/v3/maintenance/status": Route(codec.EMPTY_REQUEST, maintenance.status),
    "/v3/maintenance/defragment": Route(codec.EMPTY_REQUEST, maintenance.defragment),
    # Hash and HashKV share this path; the first registration (Hash) wins.
    "/v3/maintenance/hash": Route(codec.EMPTY_REQUEST, maintenance.hash_),
    "/v3/maintenance/snapshot": Route(codec.EMPTY_REQUEST, stream=maintenance.snapshot),
    "/v3/maintenance/transfer-leadership": Route(codec.MOVE_LEADER_REQUEST, maintenance.move_leader),
    **{
        f"/v3/auth/{p}": _AUTH
        for p in (
            "enable",
            "disable",
            "authenticate",
            "user/add",
            "user/get",
            "user/list",
            "user/delete",
            "user/changepw",
            "user/grant",
            "user/revoke",
            "role/add",
            "role/get",
            "role/list",
            "role/delete",
            "role/grant",
            "role/revoke",
        )
    },
    "/v3/lock/lock": _LOCK,
    "/v3/lock/unlock": _LOCK,
    **{f"/v3/election/{p}": _ELECTION for p in ("campaign", "proclaim", "leader", "resign", "observe")},
}

# etcd 3.4 isRPCSupportedForLearner: a learner answers status and serializable ranges only.
ERR_LEARNER: Final = ("etcdserver: rpc not supported for learner", Code.UNAVAILABLE)


def _learner_serves(route: Route, d: dict[str, Any]) -> bool:
    if route.unary is maintenance.status:
        return True
    return route.unary is kv.range_ and bool(d.get("serializable", False))


# A body this large cannot hold a request under the gRPC limit in any sane encoding.
BODY_READ_CAP: Final = 64 << 20


class V3Gateway:
    """Raw ASGI handler for every path under /v3/ (after the /v3beta/ rewrite)."""

    def __init__(self, backend: V3Backend, answer_prefix: Headers | None = None) -> None:
        self.backend = backend
        # Headers the access layer puts before every answer (CORS): fast answers carry them.
        self._answer_prefix: Headers = list(answer_prefix or ())
        # Whole range answers by request body, kept while the raft indexes, the term and the
        # revision are unchanged (every change of the store or of the headers moves one of
        # them): body -> ((committed, applied, term, revision), serializable, answer).
        self._range_cache: dict[bytes, tuple[tuple[int, int, int, int], bool, FastAnswer]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        route = ROUTES.get(path)
        method: str = scope["method"]
        override = header_value(scope, b"x-http-method-override")
        if (
            override
            and method == "POST"
            and header_value(scope, b"content-type") == b"application/x-www-form-urlencoded"
        ):
            method = override.decode("latin-1").upper()
        if route is None:
            await respond(send, 404, [CT_TEXT, NOSNIFF, *etcd_headers(self.backend)], b"Not Found\n")
            return
        if method != "POST":
            await respond(send, 405, [CT_TEXT, NOSNIFF, *etcd_headers(self.backend)], b"Method Not Allowed\n")
            return
        if route.stream is not None:
            out = ResponseStream(send, lambda: etcd_headers(self.backend))
            if self.backend.v3_is_learner():
                await out.error(GrpcError(*ERR_LEARNER))  # etcd's stream interceptor: no streams
                await out.end()
                return
            await route.stream(self.backend, RequestStream(receive), out)
            return
        await self._unary(scope, receive, send, route)

    def fast_unary(self, path: str, body: bytes) -> FastAnswer | Later[FastAnswer] | None:
        """A range or put answered without a task (app/httpserver.py's fast path), or None for
        __call__. Anything unusual (errors, learners, waits) is left to __call__, which checks
        it again and answers it."""
        if path == "/v3/kv/range":
            now = True
        elif path == "/v3/kv/put":
            now = False
        else:
            return None
        be = self.backend
        route = ROUTES[path]
        if now:
            st = be.raft_status()
            stamp = (st.committed_index, st.applied_index, st.term, be.v3_revision())
            hit = self._range_cache.get(body)
            if hit is not None and hit[0] == stamp and (hit[1] or be.v3_read_ready()):
                return hit[2]
        try:
            d = codec.decode_body(route.request, body)
            size = codec.proto_size(route.request, d)
            if be.v3_is_learner() or size > be.v3_limits()[0] + GRPC_OVERHEAD_BYTES:
                return None
            if now:
                obj = kv.range_now(be, d)
                if obj is None:
                    return None
                ok = self._ok(obj)
                if len(body) <= RANGE_CACHE_BODY_MAX and len(ok[2]) <= RANGE_CACHE_ANSWER_MAX:
                    if len(self._range_cache) >= RANGE_CACHE_MAX:
                        self._range_cache.clear()
                    self._range_cache[body] = (stamp, bool(d.get("serializable")), ok)
                return ok
            pending = kv.put_later(be, d, size)
        except (GrpcError, ServerError, GoJSONError):
            return None
        if pending is None:
            return None
        answer: Later[FastAnswer] = Later()

        def done(fut: Later[Obj]) -> None:
            try:
                answer.set_result(self._ok(fut.result()))
            except GrpcError as err:
                answer.set_result(self._unary_error(err))
            except ServerError as exc:
                answer.set_result(self._unary_error(from_server_error(exc)))
            except BaseException as exc:  # a bug: the server answers 500 and logs it
                answer.set_exception(exc)

        pending.add_done_callback(done)
        return answer

    def _ok(self, obj: Obj) -> FastAnswer:
        body = dumps(obj)
        headers = [*self._answer_prefix, CT_JSON, GRPC_METADATA, *etcd_headers(self.backend)]
        if len(body) <= GO_CHUNK_THRESHOLD:
            headers.append((b"content-length", b"%d" % len(body)))
        return 200, headers, body

    def _unary_error(self, err: GrpcError) -> FastAnswer:
        """send_unary_error's answer on a server without trailers (chunked, no content-length)."""
        headers = [
            *self._answer_prefix,
            CT_JSON,
            *etcd_headers(self.backend),
            (b"trailer", b"Grpc-Trailer-Content-Type"),
        ]
        return http_status(err.code), headers, error_body(err.message, err.code)

    async def _unary(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        be = self.backend
        try:
            body = await read_body(receive, BODY_READ_CAP)
        except BodyTooLarge:
            limit = be.v3_limits()[0] + GRPC_OVERHEAD_BYTES
            await send_unary_error(
                scope, send, grpc_message_too_large(BODY_READ_CAP, limit), etcd_headers(be)
            )
            return
        try:
            d = codec.decode_body(route.request, body)
        except GoJSONError as exc:
            await send_decode_error(send, exc.message, Code.INVALID_ARGUMENT, etcd_headers(be))
            return
        try:
            limit = be.v3_limits()[0] + GRPC_OVERHEAD_BYTES
            size = codec.proto_size(route.request, d)
            if size > limit:
                raise grpc_message_too_large(size, limit)
            if route.unary is None:
                raise GrpcError(f"unknown service {route.service}", Code.UNIMPLEMENTED)
            if be.v3_is_learner() and not _learner_serves(route, d):
                raise GrpcError(*ERR_LEARNER)
            obj = await route.unary(be, d)
        except GrpcError as err:
            await send_unary_error(scope, send, err, etcd_headers(be))
            return
        except ServerError as exc:
            await send_unary_error(scope, send, from_server_error(exc), etcd_headers(be))
            return
        await respond(send, 200, [CT_JSON, GRPC_METADATA, *etcd_headers(be)], dumps(obj))
