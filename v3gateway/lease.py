"""Lease service handlers: grant, revoke, timetolive, leases, and the keepalive stream.

Invariant: grant/revoke go through the log (size-checked as raft requests); keepalive renews
on the leader without the log, as etcd does; an unknown lease is not an error for keepalive
(TTL omitted) nor for timetolive (TTL -1). Must not import app or raft.
"""

from __future__ import annotations

from typing import Any

from store.errors import ServerError
from v3gateway import codec
from v3gateway.backend import V3Backend
from v3gateway.codec import Obj, put_int
from v3gateway.common import RAFT_LEASE_GRANT, RAFT_LEASE_REVOKE, check_raft_size, header
from v3gateway.errors import GrpcError, from_server_error
from v3gateway.gojson import GoJSONError
from v3gateway.stream import RequestStream, ResponseStream


async def grant(be: V3Backend, d: dict[str, Any]) -> Obj:
    check_raft_size(be, RAFT_LEASE_GRANT, codec.proto_size(codec.LEASE_GRANT_REQUEST, d))
    lease_id, ttl_s, revision = await be.v3_lease_grant(d.get("ID", 0), d.get("TTL", 0))
    o: Obj = {"header": header(be, revision)}
    put_int(o, "ID", lease_id)
    put_int(o, "TTL", ttl_s)
    return o


async def revoke(be: V3Backend, d: dict[str, Any]) -> Obj:
    check_raft_size(be, RAFT_LEASE_REVOKE, codec.proto_size(codec.LEASE_ID_REQUEST, d))
    revision = await be.v3_lease_revoke(d.get("ID", 0))
    return {"header": header(be, revision)}


async def time_to_live(be: V3Backend, d: dict[str, Any]) -> Obj:
    lease_id: int = d.get("ID", 0)
    info = await be.v3_lease_time_to_live(lease_id, keys=bool(d.get("keys")))
    o: Obj = {"header": header(be, be.v3_revision())}
    put_int(o, "ID", lease_id)
    if info is None:
        o["TTL"] = "-1"
        return o
    put_int(o, "TTL", info.ttl_s)
    put_int(o, "grantedTTL", info.granted_ttl_s)
    if info.keys:
        o["keys"] = [codec.b64(k) for k in info.keys]
    return o


async def leases(be: V3Backend, d: dict[str, Any]) -> Obj:
    o: Obj = {"header": header(be, be.v3_revision())}
    ids = be.v3_leases()
    if ids:
        o["leases"] = [({"ID": str(i)} if i else {}) for i in ids]
    return o


async def keepalive(be: V3Backend, requests: RequestStream, out: ResponseStream) -> None:
    """One answer per request message; the stream ends with the request body."""
    first = True
    while True:
        try:
            d = await requests.next(codec.LEASE_ID_REQUEST)
        except GoJSONError as exc:
            if first:
                await out.decode_error(exc.message)
                return
            break  # the gateway stops forwarding; the gRPC stream then ends normally
        first = False
        if d is None:
            break
        lease_id: int = d.get("ID", 0)
        try:
            ttl_s = await be.v3_lease_renew(lease_id)
        except GrpcError as err:
            await out.error(err)
            return
        except ServerError as exc:
            await out.error(from_server_error(exc))
            return
        o: Obj = {"header": header(be, be.v3_revision())}
        put_int(o, "ID", lease_id)
        put_int(o, "TTL", ttl_s)
        await out.result(o)
    if not requests.disconnected:
        await out.end()
