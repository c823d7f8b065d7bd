"""The peer transport: Raft messages and forwarded proposals between members, over HTTP.

Sending (PeerTransport): one bounded queue, one sender task and one keep-alive httpx client per
peer. `send()` only enqueues, so the Raft loop never waits on the network; a full queue drops
(Raft tolerates loss, etcd's rafthttp drops the same way). The sender POSTs everything queued
as one batch to `/raft/message`. A failed POST drops its batch, tells the node the peer is
unreachable (and a SNAP in it failed), and backs off; a slow or dead peer only ever delays its
own queue. Forwarded proposals (`forward()`) use their own client pool, so a client write never
queues behind a snapshot.

Receiving (PeerApp): a raw ASGI app for the second listener (`--listen-peer-urls`). Every
request must carry this cluster's ID in `X-Etcd-Cluster-Id` (etcd checkClusterCompatibility:
412 otherwise, and the body is dropped unread).
  POST /raft/message   a batch (raft.codec) → node.step each message addressed to us → 204
  POST /raft/propose   one encoded log entry → node.propose on the leader → 204;
                       409 + X-Etcd-Leader when we are not leader, 503 when no leader is known.
  POST /lease/keepalive   {"ID": n} → the leader renews lease n → 200 {"TTL": granted or 0};
  POST /lease/timetolive  {"ID": n, "keys": b} → 200 {"found", "TTL", "grantedTTL", "keys"
                       (base64)}; both 409/503 like /raft/propose on a non-leader (etcd forwards
                       LeaseKeepAlive/LeaseTimeToLive to the leader over its peer port).

Invariant: a forwarded proposal is retried by the sender only when the leader answered that it
did *not* take it (409/503) or the connection was never made; otherwise a retry could put the
same request in the log twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx
import orjson

from raft.codec import CodecError, decode_batch, encode_batch
from raft.core.errors import NotLeader, ProposalDropped, Stopped
from raft.core.types import Message, MsgType

log = logging.getLogger("etcdpy.peers")

Scope = Mapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Mapping[str, Any]], Any]

QUEUE_SIZE: Final = 4096  # messages waiting per peer (etcd streamBufSize)
MAX_BATCH: Final = 1024  # messages per POST
MAX_BODY_BYTES: Final = 1 << 30  # a snapshot travels whole in one body (see module docstring)
MAX_LEASE_BODY_BYTES: Final = 4096
LEASE_ROUTES: Final = ("/lease/keepalive", "/lease/timetolive")
BACKOFF_MIN_S: Final = 0.05
BACKOFF_MAX_S: Final = 1.0
CONNECT_TIMEOUT_S: Final = 1.0
IO_TIMEOUT_S: Final = 5.0
CLUSTER_ID_HEADER: Final = "X-Etcd-Cluster-Id"
FROM_HEADER: Final = "X-Server-From"
LEADER_HEADER: Final = "X-Etcd-Leader"
OCTET_STREAM: Final = "application/octet-stream"


class PeerHandler(Protocol):
    """What the receiving side needs from the server (app.server.EtcdServer)."""

    @property
    def cluster_id(self) -> int: ...

    @property
    def member_id(self) -> int: ...

    def step_peer_message(self, msg: Message) -> None:
        """Feed one inbound message to the Raft node; never raises."""
        ...

    def propose_forwarded(self, data: bytes) -> None:
        """Append a follower's encoded entry. Raises NotLeader, ProposalDropped or Stopped."""
        ...

    async def lease_keepalive_forwarded(self, lease_id: int) -> int:
        """Renew on the leader: the granted TTL, 0 if unknown. Raises NotLeader/ProposalDropped."""
        ...

    async def lease_ttl_forwarded(self, lease_id: int, keys: bool) -> LeaseTTLTuple | None:
        """(remaining, granted, keys) on the leader, None if unknown; raises like the above."""
        ...


LeaseTTLTuple = tuple[int, int, tuple[bytes, ...]]  # remaining s, granted s, attached keys
LeaseTTLAnswer = tuple[bool, int, int, tuple[bytes, ...]]  # found, then as LeaseTTLTuple


class NodeReports(Protocol):
    """Where the transport reports delivery failures (raft.node.RaftNode)."""

    def report_unreachable(self, node_id: int) -> None: ...

    def report_snapshot(self, node_id: int, *, failed: bool) -> None: ...


# ---- statistics ------------------------------------------------------------------------------


@dataclass(slots=True)
class FollowerStats:
    """etcd stats.FollowerStats: round trips of POSTs to one peer, in seconds."""

    success: int = 0
    fail: int = 0
    current: float = 0.0
    mean: float = 0.0
    m2: float = 0.0  # Welford's running sum of squared deviations
    minimum: float = math.inf
    maximum: float = 0.0

    def succ(self, rtt_s: float) -> None:
        self.success += 1
        self.current = rtt_s
        delta = rtt_s - self.mean
        self.mean += delta / self.success
        self.m2 += delta * (rtt_s - self.mean)
        self.minimum = min(self.minimum, rtt_s)
        self.maximum = max(self.maximum, rtt_s)

    def as_json(self) -> dict[str, Any]:
        std = math.sqrt(self.m2 / self.success) if self.success else 0.0
        return {
            "latency": {
                "current": self.current,
                "average": self.mean,
                "standardDeviation": std,
                "minimum": self.minimum if self.success else 0.0,
                "maximum": self.maximum,
            },
            "counts": {"fail": self.fail, "success": self.success},
        }


# ---- sending ---------------------------------------------------------------------------------


class ForwardOutcome(enum.Enum):
    ACCEPTED = "accepted"  # the leader appended it; its apply will answer the waiter
    REFUSED = "refused"  # definitely not appended (not leader / no leader / never connected)
    UNKNOWN = "unknown"  # the request may have reached the leader; do not send it again


@dataclass(frozen=True, slots=True)
class ForwardResult:
    outcome: ForwardOutcome
    leader_hint: int = 0


@dataclass(slots=True)
class _Peer:
    id: int
    urls: tuple[str, ...]
    client: httpx.AsyncClient
    queue: asyncio.Queue[Message]
    stats: FollowerStats = field(default_factory=FollowerStats)
    url_index: int = 0
    task: asyncio.Task[None] | None = None
    dropped: int = 0

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(IO_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


class PeerTransport:
    """raft.node.Transport over HTTP; see the module docstring for the rules it keeps."""

    def __init__(self, member_id: int, cluster_id: int, peer_urls: Mapping[int, tuple[str, ...]]) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._peer_urls = {i: urls for i, urls in peer_urls.items() if i != member_id and urls}
        self._peers: dict[int, _Peer] = {}
        self._node: NodeReports | None = None
        self._forward_client: httpx.AsyncClient | None = None
        self.sent_append_count = 0
        self._headers = {
            CLUSTER_ID_HEADER: format(cluster_id, "x"),
            FROM_HEADER: format(member_id, "x"),
        }

    def start(self, node: NodeReports) -> None:
        """Create the clients and sender tasks (call inside the running loop)."""
        self._node = node
        loop = asyncio.get_running_loop()
        for pid, urls in self._peer_urls.items():
            client = httpx.AsyncClient(
                timeout=_timeout(),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                headers=self._headers,
            )
            peer = _Peer(pid, tuple(urls), client, asyncio.Queue(QUEUE_SIZE))
            peer.task = loop.create_task(self._sender(peer))
            self._peers[pid] = peer
        self._forward_client = httpx.AsyncClient(
            timeout=_timeout(),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers=self._headers,
        )

    async def stop(self) -> None:
        for peer in self._peers.values():
            if peer.task is not None:
                peer.task.cancel()
        for peer in self._peers.values():
            if peer.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await peer.task
            await peer.client.aclose()
        if self._forward_client is not None:
            await self._forward_client.aclose()
        self._peers.clear()

    def peer_url(self, member_id: int) -> str | None:
        urls = self._peer_urls.get(member_id)
        return urls[0] if urls else None

    # -- raft.node.Transport -------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for m in messages:
            peer = self._peers.get(m.to)
            if peer is None:
                continue  # not a peer we know how to reach
            try:
                peer.queue.put_nowait(m)
            except asyncio.QueueFull:
                peer.dropped += 1
                if m.type is MsgType.SNAP:
                    self._report_snapshot(m.to, failed=True)
                if peer.dropped % 1000 == 1:
                    log.warning("dropped message(s) to %x: its send queue is full", m.to)

    # -- statistics ----------------------------------------------------------------------------

    def follower_stats(self) -> dict[str, Any]:
        return {format(pid, "x"): p.stats.as_json() for pid, p in sorted(self._peers.items())}

    def reset_stats(self) -> None:
        for p in self._peers.values():
            p.stats = FollowerStats()

    # -- internals -----------------------------------------------------------------------------

    def _report_unreachable(self, pid: int) -> None:
        if self._node is not None:
            self._node.report_unreachable(pid)

    def _report_snapshot(self, pid: int, *, failed: bool) -> None:
        if self._node is not None:
            self._node.report_snapshot(pid, failed=failed)

    async def _sender(self, peer: _Peer) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            batch = [await peer.queue.get()]
            while len(batch) < MAX_BATCH and not peer.queue.empty():
                batch.append(peer.queue.get_nowait())
            if await self._post(peer, batch):
                backoff = BACKOFF_MIN_S
                continue
            # The batch is lost, as on a broken network. Messages queued behind it are stale by
            # the time the back-off ends; drop them too (Raft resends what still matters).
            self._report_unreachable(peer.id)
            stale = batch
            while not peer.queue.empty():
                stale.append(peer.queue.get_nowait())
            for m in stale:
                if m.type is MsgType.SNAP:
                    self._report_snapshot(peer.id, failed=True)
            peer.url_index += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _post(self, peer: _Peer, batch: list[Message]) -> bool:
        body = encode_batch(batch)
        start = time.monotonic()
        try:
            resp = await peer.client.post(
                peer.url + "/raft/message", content=body, headers={"Content-Type": OCTET_STREAM}
            )
        except httpx.HTTPError as exc:
            peer.stats.fail += 1
            log.debug("sending %d message(s) to %x failed: %r", len(batch), peer.id, exc)
            return False
        if resp.status_code != 204:
            peer.stats.fail += 1
            if resp.status_code == 412:
                log.error("peer %x at %s belongs to another cluster (412); dropping", peer.id, peer.url)
            else:
                log.debug("peer %x answered %d to raft messages", peer.id, resp.status_code)
            return False
        peer.stats.succ(time.monotonic() - start)
        for m in batch:
            if m.type is MsgType.APP:
                self.sent_append_count += 1
            elif m.type is MsgType.SNAP:
                self._report_snapshot(peer.id, failed=False)
        return True

    async def forward(self, leader: int, data: bytes) -> ForwardResult:
        """POST one encoded entry to the leader's /raft/propose; see ForwardOutcome."""
        url = self.peer_url(leader)
        client = self._forward_client
        if url is None or client is None:
            return ForwardResult(ForwardOutcome.REFUSED)
        try:
            resp = await client.post(
                url + "/raft/propose", content=data, headers={"Content-Type": OCTET_STREAM}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            return ForwardResult(ForwardOutcome.REFUSED)
        except httpx.HTTPError:
            return ForwardResult(ForwardOutcome.UNKNOWN)
        if resp.status_code == 204:
            return ForwardResult(ForwardOutcome.ACCEPTED)
        if resp.status_code in (409, 503, 412):
            hint = 0
            with contextlib.suppress(ValueError):
                hint = int(resp.headers.get(LEADER_HEADER, "0"), 16)
            return ForwardResult(ForwardOutcome.REFUSED, hint)
        return ForwardResult(ForwardOutcome.UNKNOWN)

    async def lease_keepalive(self, leader: int, lease_id: int) -> int | None:
        """Renew `lease_id` on the leader: its granted TTL (0: unknown), None if not answered.

        A keepalive is idempotent, so the caller may simply ask again after None.
        """
        o = await self._lease_post(leader, "/lease/keepalive", {"ID": lease_id})
        return None if o is None else int(o["TTL"])

    async def lease_time_to_live(self, leader: int, lease_id: int, keys: bool) -> LeaseTTLAnswer | None:
        """The leader's view of `lease_id` as (found, remaining, granted, keys); None if not answered."""
        o = await self._lease_post(leader, "/lease/timetolive", {"ID": lease_id, "keys": keys})
        if o is None:
            return None
        if not o["found"]:
            return False, 0, 0, ()
        return True, int(o["TTL"]), int(o["grantedTTL"]), tuple(base64.b64decode(k) for k in o["keys"])

    async def _lease_post(self, leader: int, route: str, body: dict[str, Any]) -> dict[str, Any] | None:
        url = self.peer_url(leader)
        client = self._forward_client
        if url is None or client is None:
            return None
        try:
            resp = await client.post(url + route, content=orjson.dumps(body))
        except httpx.HTTPError as exc:
            log.debug("forwarding %s to %x failed: %r", route, leader, exc)
            return None
        if resp.status_code != 200:
            return None
        try:
            o = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return None
        return o if isinstance(o, dict) else None


# ---- receiving -------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("peer went away")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    hdrs = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    if body or status != 204:
        hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class PeerApp:
    """The ASGI app of the peer listener; see the module docstring for its routes."""

    def __init__(self, handler: PeerHandler) -> None:
        self.handler = handler
        self.recv_append_count = 0
        self._cid = format(handler.cluster_id, "x").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path not in ("/raft/message", "/raft/propose", *LEASE_ROUTES):
            await _respond(send, 404, b"404 page not found\n")
            return
        if method != "POST":
            await _respond(send, 405, b"Method Not Allowed\n", [(b"allow", b"POST")])
            return
        cid = b""
        for name, value in scope["headers"]:
            if name == b"x-etcd-cluster-id":
                cid = value.lower()
                break
        if cid != self._cid:
            await _respond(send, 412, b"cluster ID mismatch\n")
            return
        try:
            body = await _read_body(receive, MAX_LEASE_BODY_BYTES if path in LEASE_ROUTES else MAX_BODY_BYTES)
        except _BodyTooLarge:
            await _respond(send, 413, b"request too large\n")
            return
        except ConnectionError:
            return
        if path == "/raft/message":
            await self._messages(send, body)
        elif path == "/raft/propose":
            await self._propose(send, body)
        else:
            await self._lease(send, path, body)

    async def _messages(self, send: Send, body: bytes) -> None:
        try:
            messages = decode_batch(body)
        except CodecError as exc:
            await _respond(send, 400, f"{exc}\n".encode())
            return
        me = self.handler.member_id
        for m in messages:
            if m.to != me:
                continue  # meant for another member (a stale URL); never step it here
            if m.type is MsgType.APP:
                self.recv_append_count += 1
            self.handler.step_peer_message(m)
        await _respond(send, 204)

    async def _propose(self, send: Send, body: bytes) -> None:
        try:
            self.handler.propose_forwarded(body)
        except NotLeader as exc:
            hint = format(exc.leader_hint, "x").encode()
            await _respond(send, 409, b"not leader\n", [(LEADER_HEADER.lower().encode(), hint)])
            return
        except (ProposalDropped, Stopped):
            await _respond(send, 503, b"no leader\n")
            return
        await _respond(send, 204)

    async def _lease(self, send: Send, path: str, body: bytes) -> None:
        try:
            req = orjson.loads(body)
            lease_id = int(req["ID"])
            keys = bool(req.get("keys", False))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            await _respond(send, 400, b"bad lease request\n")
            return
        out: dict[str, Any]
        try:
            if path == "/lease/keepalive":
                out = {"TTL": await self.handler.lease_keepalive_forwarded(lease_id)}
            else:
                info = await self.handler.lease_ttl_forwarded(lease_id, keys)
                if info is None:
                    out = {"found": False}
                else:
                    ttl, granted, key_list = info
                    out = {
                        "found": True,
                        "TTL": ttl,
                        "grantedTTL": granted,
                        "keys": [base64.b64encode(k).decode() for k in key_list],
                    }
        except NotLeader as exc:
            hint = format(exc.leader_hint, "x").encode()
            await _respond(send, 409, b"not leader\n", [(LEADER_HEADER.lower().encode(), hint)])
            return
        except (ProposalDropped, Stopped, TimeoutError):
            await _respond(send, 503, b"no leader\n")
            return
        await _respond(send, 200, orjson.dumps(out))
