"""The peer transport: Raft messages and forwarded proposals between members, over HTTP.

Sending (PeerTransport): one bounded queue, one sender task and one keep-alive httpx client per
peer. `send()` only enqueues, so the Raft loop never waits on the network; a full queue drops
(Raft tolerates loss, etcd's rafthttp drops the same way). The sender POSTs everything queued
as one batch to `/raft/message`. A failed POST drops its batch, tells the node the peer is
unreachable, and backs off; a slow or dead peer only ever delays its own queue. Forwarded
proposals (`forward()`) use their own client pool, so a client write never queues behind a
snapshot.

A SNAP never enters that queue (etcd has a separate snapshot sender too): it gets its own task
and connection, POST /raft/snapshot, whose body is the header (raft.codec) followed by the
snapshot data streamed in chunks straight from the bytes the Raft storage already holds, so
heartbeats and appends keep flowing meanwhile. At most one snapshot is in flight per peer; its
outcome is reported to the node (report_snapshot), as is a SNAP refused because one is in flight.

Receiving (PeerApp): a raw ASGI app for the second listener (`--listen-peer-urls`). Every
request must carry this cluster's ID in `X-Etcd-Cluster-Id` (etcd checkClusterCompatibility:
412 otherwise, and the body is dropped unread).
  POST /raft/message   a batch (raft.codec) → node.step each message addressed to us → 204
  POST /raft/snapshot  header, then data (raft.codec snapshot request), read chunk by chunk into
                       one buffer of the declared size → node.step → 204; 400 if truncated or
                       malformed, 413 over MAX_SNAPSHOT_BYTES, 503 while another is arriving.
  POST /raft/propose   one encoded log entry → node.propose on the leader → 204; 400 if it does not
                       decode (an entry no member can apply would stop them all);
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
import io
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import httpx
import orjson

from app.faults import FAULTS
from raft.codec import (
    SNAPSHOT_PREFIX_SIZE,
    CodecError,
    decode_batch,
    decode_snapshot_header,
    decode_snapshot_prefix,
    encode_batch,
    encode_snapshot_header,
)
from raft.core.errors import NotLeader, ProposalDropped, Stopped
from raft.core.types import Message, MsgType, SnapshotMeta

log = logging.getLogger("etcdpy.peers")

Scope = Mapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Mapping[str, Any]], Any]

QUEUE_SIZE: Final = 4096  # messages waiting per peer (etcd streamBufSize)
MAX_BATCH: Final = 1024  # messages per POST
MAX_BODY_BYTES: Final = 1 << 30  # a batch of appends; snapshots have their own route and bound
MAX_SNAPSHOT_BYTES: Final = 1 << 30  # snapshot data per /raft/snapshot; larger is refused both ways
MAX_SNAPSHOT_HEADER_BYTES: Final = 1 << 20  # the SNAP without data: ids and a few numbers
SNAPSHOT_CHUNK_BYTES: Final = 128 << 10  # what the sender hands httpx at a time
# A snapshot send (or receive) must finish within floor + size / rate, so a stalled transfer
# ends and the leader can try again, while a large one on a slow link still has time.
SNAPSHOT_TIMEOUT_FLOOR_S: Final = 10.0
SNAPSHOT_MIN_RATE_BYTES_S: Final = 1 << 20
SNAPSHOT_ROUTE: Final = "/raft/snapshot"
MAX_LEASE_BODY_BYTES: Final = 4096
LEASE_ROUTES: Final = ("/lease/keepalive", "/lease/timetolive")
BACKOFF_MIN_S: Final = 0.05
BACKOFF_MAX_S: Final = 1.0
CONNECT_TIMEOUT_S: Final = 1.0
IO_TIMEOUT_S: Final = 5.0
PROBE_INTERVAL_S: Final = 1.0  # an idle peer link is checked this often
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

    def propose_forwarded(self, data: bytes, conf: bool) -> None:
        """Append a follower's encoded entry (a CONF_CHANGE one if `conf`).

        Raises NotLeader, ProposalDropped or Stopped; ValueError if the entry does not decode.
        """
        ...

    def members_json(self) -> bytes:
        """The membership for a joining member: [{"id", "name", "peerURLs", "clientURLs"}]."""
        ...

    def is_removed_member(self, member_id: int) -> bool: ...

    async def promote_as_leader(self, member_id: int) -> None:
        """Promote a learner on the leader; raises MembershipError or ServerError."""
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

    async def snapshot_data(self, meta: SnapshotMeta) -> bytes: ...


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
    active_since: float | None = None  # monotonic time of the first success since the last failure
    snap_task: asyncio.Task[None] | None = None  # the snapshot being sent, if any

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]


# Peer URLs are plain http (etcdpy refuses https ones at start), so no client ever makes a TLS
# handshake. httpx would otherwise load the CA bundle for every client (~35 ms each, a third of a
# restart); with no trust anchors, a handshake would fail closed.
_PLAIN_HTTP_ONLY = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(IO_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


async def _snapshot_body(header: bytes, data: bytes) -> AsyncIterator[bytes]:
    """The snapshot request body: the header, then the data in SNAPSHOT_CHUNK_BYTES pieces.

    Each piece is cut from a memoryview of the storage's bytes, so only one chunk is ever copied
    at a time (h11 copies each chunk into its write buffer anyway); the whole is never copied.
    """
    yield header
    view = memoryview(data)
    for off in range(0, len(view), SNAPSHOT_CHUNK_BYTES):
        yield view[off : off + SNAPSHOT_CHUNK_BYTES].tobytes()


class PeerTransport:
    """raft.node.Transport over HTTP; see the module docstring for the rules it keeps."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        peer_urls: Mapping[int, tuple[str, ...]],
        *,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        self.member_id = member_id
        self._on_removed = on_removed
        self._closing: set[asyncio.Task[None]] = set()
        self.cluster_id = cluster_id
        self._peer_urls = {i: urls for i, urls in peer_urls.items() if i != member_id and urls}
        self._peers: dict[int, _Peer] = {}
        self._node: NodeReports | None = None
        self._forward_client: httpx.AsyncClient | None = None
        self._snap_client: httpx.AsyncClient | None = None
        self._started = False  # between start() and stop(): clients may be created
        self.sent_append_count = 0
        # etcd_network_snapshot_send_success / _failures, by peer id
        self.snapshot_send_success: dict[int, int] = {}
        self.snapshot_send_failures: dict[int, int] = {}
        self._headers = {
            CLUSTER_ID_HEADER: format(cluster_id, "x"),
            FROM_HEADER: format(member_id, "x"),
        }

    def start(self, node: NodeReports) -> None:
        """Create the sender tasks (call inside the running loop). The shared clients come on
        first use: a one-member cluster never needs them (~15 ms of its start)."""
        self._node = node
        self._started = True
        for pid in list(self._peer_urls):
            self._start_peer(pid)

    def _forwarder(self) -> httpx.AsyncClient | None:
        """The client for proposals and lease calls forwarded to the leader; None once stopped."""
        if self._forward_client is None and self._started:
            self._forward_client = self._client(httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return self._forward_client

    def _snapshot_client(self) -> httpx.AsyncClient | None:
        # Snapshots are rare and at most one per peer is in flight (send()), so no pool bound
        # and no idle connections kept.
        if self._snap_client is None and self._started:
            self._snap_client = self._client(httpx.Limits(max_connections=None, max_keepalive_connections=0))
        return self._snap_client

    def _client(self, limits: httpx.Limits) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=_timeout(), limits=limits, headers=self._headers, verify=_PLAIN_HTTP_ONLY)

    def _start_peer(self, pid: int) -> None:
        client = self._client(httpx.Limits(max_connections=1, max_keepalive_connections=1))
        peer = _Peer(pid, tuple(self._peer_urls[pid]), client, asyncio.Queue(QUEUE_SIZE))
        peer.task = asyncio.get_running_loop().create_task(self._sender(peer))
        self._peers[pid] = peer

    # -- membership (called as conf changes apply) ---------------------------------------------

    def set_peer(self, pid: int, urls: Sequence[str]) -> None:
        """Add a peer, or give a known one new URLs (etcd UpdateRaftAttributes)."""
        if pid == self.member_id or not urls:
            return
        self._peer_urls[pid] = tuple(urls)
        peer = self._peers.get(pid)
        if peer is not None:
            peer.urls = tuple(urls)
        elif self._node is not None:
            self._start_peer(pid)

    def remove_peer(self, pid: int) -> None:
        """Stop talking to a removed member (its queue is dropped)."""
        self._peer_urls.pop(pid, None)
        peer = self._peers.pop(pid, None)
        if peer is not None:
            for task in (peer.task, peer.snap_task):
                if task is not None:
                    task.cancel()
            closing = asyncio.get_running_loop().create_task(peer.client.aclose())
            self._closing.add(closing)  # keep a reference until done (the loop holds weak ones)
            closing.add_done_callback(self._closing.discard)

    def peer_ids(self) -> set[int]:
        return set(self._peer_urls)

    def active_since(self, pid: int) -> float | None:
        """monotonic() since when `pid` has answered without a failure; None if it does not now."""
        peer = self._peers.get(pid)
        return None if peer is None else peer.active_since

    async def promote(self, leader: int, member_id: int, timeout_s: float) -> None:
        """Ask the leader to promote a learner (etcd forwards PromoteMember to the leader)."""
        from store.errors import LeaderUnknown, MembershipError, RequestTimeout

        url = self.peer_url(leader)
        client = self._forwarder()
        if url is None or client is None:
            raise LeaderUnknown()
        try:
            resp = await client.post(f"{url}/members/promote/{member_id:x}", timeout=timeout_s)
        except httpx.HTTPError:
            raise RequestTimeout() from None
        if resp.status_code == 204:
            return
        try:
            o = orjson.loads(resp.content)
            raise MembershipError(str(o["kind"]), str(o["message"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise LeaderUnknown() from None

    async def stop(self) -> None:
        self._started = False
        for peer in self._peers.values():
            if peer.task is not None:
                peer.task.cancel()
            if peer.snap_task is not None:
                peer.snap_task.cancel()
        for peer in self._peers.values():
            for task in (peer.task, peer.snap_task):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await peer.client.aclose()
        if self._forward_client is not None:
            await self._forward_client.aclose()
            self._forward_client = None  # a call after stop is refused, not sent on a closed client
        if self._snap_client is not None:
            await self._snap_client.aclose()
            self._snap_client = None
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
            if m.type is MsgType.SNAP:
                self._send_snapshot(peer, m)
                continue
            try:
                peer.queue.put_nowait(m)
            except asyncio.QueueFull:
                peer.dropped += 1
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
            # An idle link is probed with an empty batch: etcd's peer streams stay connected
            # between every pair of members, and its reconfiguration checks (and ours) judge
            # health by how long each peer has been reachable, not by raft traffic.
            batch: list[Message] = []
            # asyncio.timeout, not wait_for: 3.11's wait_for returns the item instead of raising
            # when the task is cancelled just as a message arrives, and this loop then never
            # ended (a stop that hung until SIGKILL, seen in the suite).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    batch.append(await peer.queue.get())
            while batch and len(batch) < MAX_BATCH and not peer.queue.empty():
                batch.append(peer.queue.get_nowait())
            if await self._post(peer, batch):
                backoff = BACKOFF_MIN_S
                continue
            peer.active_since = None
            if not batch:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            # The batch is lost, as on a broken network. Messages queued behind it are stale by
            # the time the back-off ends; drop them too (Raft resends what still matters).
            self._report_unreachable(peer.id)
            while not peer.queue.empty():
                peer.queue.get_nowait()
            peer.url_index += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _post(self, peer: _Peer, batch: list[Message]) -> bool:
        if not await FAULTS.before_send(peer.id):  # test-only (--unsafe-test-faults): a cut link
            peer.stats.fail += 1
            return False
        body = encode_batch(batch)
        start = time.monotonic()
        try:
            resp = await peer.client.post(
                peer.url + "/raft/message", content=body, headers={"Content-Type": OCTET_STREAM}
            )
        except httpx.HTTPError as exc:
            peer.stats.fail += 1
            peer.active_since = None
            log.debug("sending %d message(s) to %x failed: %r", len(batch), peer.id, exc)
            return False
        if resp.status_code != 204:
            peer.stats.fail += 1
            peer.active_since = None
            if resp.status_code == 410 and self._on_removed is not None:
                self._on_removed()  # the cluster removed this member
            elif resp.status_code == 412:
                log.error("peer %x at %s belongs to another cluster (412); dropping", peer.id, peer.url)
            else:
                log.debug("peer %x answered %d to raft messages", peer.id, resp.status_code)
            return False
        peer.stats.succ(time.monotonic() - start)
        if peer.active_since is None:
            peer.active_since = time.monotonic()
        for m in batch:
            if m.type is MsgType.APP:
                self.sent_append_count += 1
        return True

    # -- snapshots -----------------------------------------------------------------------------

    def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        if peer.snap_task is not None and not peer.snap_task.done():
            # One at a time per peer bounds the memory and bandwidth a lagging follower costs;
            # the core probes again and sends a fresh SNAP once the running one is reported.
            log.debug("snapshot to %x already in flight; refusing another", peer.id)
            self._report_snapshot(peer.id, failed=True)
            return
        peer.snap_task = asyncio.get_running_loop().create_task(self._snapshot_sender(peer, m))

    async def _snapshot_sender(self, peer: _Peer, m: Message) -> None:
        ok = False
        try:
            ok = await self._post_snapshot(peer, m)
        finally:
            counts = self.snapshot_send_success if ok else self.snapshot_send_failures
            counts[peer.id] = counts.get(peer.id, 0) + 1
            if not ok:
                # etcd snapshotSender: a failed send marks the peer unreachable as well
                self._report_unreachable(peer.id)
            self._report_snapshot(peer.id, failed=not ok)

    async def _post_snapshot(self, peer: _Peer, m: Message) -> bool:
        assert m.snapshot is not None
        client = self._snapshot_client()
        if client is None:
            return False  # stopping
        index, data = m.snapshot.meta.index, m.snapshot.data
        if not data and self._node is not None:
            # A snapshot the node keeps on disk (raft/node.py): read for this send only.
            try:
                data = await self._node.snapshot_data(m.snapshot.meta)
            except (OSError, ValueError) as exc:
                log.warning("database snapshot [index: %d, to: %x] could not be read (%s)", index, peer.id, exc)
                return False
            m = replace(m, snapshot=replace(m.snapshot, data=data))
        if len(data) > MAX_SNAPSHOT_BYTES:
            log.error("database snapshot [index: %d, to: %x] too large: %d bytes", index, peer.id, len(data))
            return False
        if not await FAULTS.before_send(peer.id):  # test-only (--unsafe-test-faults): a cut link
            return False
        header = encode_snapshot_header(m)
        timeout_s = SNAPSHOT_TIMEOUT_FLOOR_S + len(data) / SNAPSHOT_MIN_RATE_BYTES_S
        log.info("start to send database snapshot [index: %d, to %x, %d bytes]...", index, peer.id, len(data))
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                resp = await client.post(
                    peer.url + SNAPSHOT_ROUTE,
                    content=_snapshot_body(header, data),
                    # A declared length, not chunked encoding: the receiver checks it up front.
                    headers={"Content-Type": OCTET_STREAM, "Content-Length": str(len(header) + len(data))},
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("database snapshot [index: %d, to: %x] failed to be sent (%r)", index, peer.id, exc)
            peer.url_index += 1
            return False
        if resp.status_code != 204:
            why = f"{resp.status_code} {resp.text.strip()}"
            log.warning("database snapshot [index: %d, to: %x] failed to be sent (%s)", index, peer.id, why)
            return False
        took = time.monotonic() - start
        log.info("database snapshot [index: %d, to: %x] sent out successfully (%.3fs)", index, peer.id, took)
        return True

    def metric_lines(self) -> list[str]:
        """etcd's snapshot-send counters in Prometheus text form (for /metrics)."""
        out: list[str] = []
        for name, counts in (
            ("etcd_network_snapshot_send_success", self.snapshot_send_success),
            ("etcd_network_snapshot_send_failures", self.snapshot_send_failures),
        ):
            out.append(f"# TYPE {name} counter")
            out += [f'{name}{{To="{pid:x}"}} {n}' for pid, n in sorted(counts.items())]
        return out

    async def forward(self, leader: int, data: bytes, *, conf: bool = False) -> ForwardResult:
        """POST one encoded entry to the leader's /raft/propose; see ForwardOutcome."""
        url = self.peer_url(leader)
        client = self._forwarder()
        if url is None or client is None:
            return ForwardResult(ForwardOutcome.REFUSED)
        try:
            resp = await client.post(
                url + ("/raft/propose?conf=1" if conf else "/raft/propose"),
                content=data,
                headers={"Content-Type": OCTET_STREAM},
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
        client = self._forwarder()
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


class _Truncated(Exception):
    pass


class _BodyStream:
    """Reads an ASGI request body as a byte stream, in exact-sized pieces."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._chunk = memoryview(b"")
        self._more = True

    async def _fill(self) -> bool:
        """Until some unread bytes are buffered; False at the end of the body."""
        while not self._chunk:
            if not self._more:
                return False
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                raise ConnectionError("peer went away")
            self._chunk = memoryview(msg.get("body", b""))
            self._more = bool(msg.get("more_body", False))
        return True

    async def read_exact(self, n: int) -> bytes:
        """Exactly n bytes (raises _Truncated if the body ends first), held once in memory.

        The buffer is allocated at its final size up front and filled chunk by chunk;
        BytesIO.getvalue() then hands that buffer over as the bytes object (CPython does not copy
        a buffer that is exactly full and not shared), so the data never exists twice.
        """
        out = io.BytesIO()
        if n:
            out.seek(n - 1)
            out.write(b"\0")
            out.seek(0)
        left = n
        while left:
            if not await self._fill():
                raise _Truncated(f"body ended {left} bytes short")
            piece = self._chunk[:left]
            out.write(piece)
            self._chunk = self._chunk[len(piece) :]
            left -= len(piece)
        return out.getvalue()

    async def at_end(self) -> bool:
        return not await self._fill()


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


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


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
        self._receiving_snapshot = False
        # etcd_network_snapshot_receive_success / _failures, by sender id (0: unknown)
        self.snapshot_receive_success: dict[int, int] = {}
        self.snapshot_receive_failures: dict[int, int] = {}

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
        if path == "/members" or path.startswith("/members/promote/"):
            await self._members_route(scope, send, path, method)
            return
        if path not in ("/raft/message", "/raft/propose", SNAPSHOT_ROUTE, *LEASE_ROUTES):
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
        if FAULTS.drops_request(scope["headers"]):  # test-only (--unsafe-test-faults): a cut link
            await _respond(send, 503, b"peer unreachable (injected fault)\n")
            return
        if self._from_removed(scope):
            await _respond(send, 410, b"the member has been permanently removed from the cluster\n")
            return
        if path == SNAPSHOT_ROUTE:
            await self._snapshot(scope, receive, send)
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
            await self._propose(send, body, scope.get("query_string", b"") == b"conf=1")
        else:
            await self._lease(send, path, body)

    async def _snapshot(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = 0
        with contextlib.suppress(ValueError):
            sender = int(_header(scope, b"x-server-from") or b"0", 16)
        if self._receiving_snapshot:
            # One at a time: two would hold two snapshots in memory; the leader retries.
            await _respond(send, 503, b"another snapshot is being received\n")
            return
        self._receiving_snapshot = True
        status, why = 500, b"snapshot not received\n"
        try:
            status, why = await self._receive_snapshot(scope, receive, sender)
        except ConnectionError:
            status = 0  # the sender went away: nobody to answer
        finally:
            self._receiving_snapshot = False
            if status != 204:
                self.snapshot_receive_failures[sender] = self.snapshot_receive_failures.get(sender, 0) + 1
        if status:
            await _respond(send, status, why)

    async def _receive_snapshot(self, scope: Scope, receive: Receive, sender: int) -> tuple[int, bytes]:
        """(status, body) of the answer; the snapshot is stepped into the node on 204."""
        body = _BodyStream(receive)
        try:
            header_len, data_len = decode_snapshot_prefix(await body.read_exact(SNAPSHOT_PREFIX_SIZE))
            if header_len > MAX_SNAPSHOT_HEADER_BYTES or data_len > MAX_SNAPSHOT_BYTES:
                return 413, b"snapshot too large\n"
            declared = _header(scope, b"content-length")
            expected = str(SNAPSHOT_PREFIX_SIZE + header_len + data_len).encode()
            if declared is not None and declared != expected:
                # Checked before the data buffer is allocated from data_len.
                return 400, b"content-length does not match the snapshot header\n"
            m = decode_snapshot_header(await body.read_exact(header_len))
            assert m.snapshot is not None  # decode_snapshot_header checked it
            if m.to != self.handler.member_id:
                return 400, f"snapshot addressed to {m.to:x}, not to this member\n".encode()
            index = m.snapshot.meta.index
            log.info("receiving database snapshot [index: %d, from %x, %d bytes]...", index, m.frm, data_len)
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_FLOOR_S + data_len / SNAPSHOT_MIN_RATE_BYTES_S):
                data = await body.read_exact(data_len)
                if not await body.at_end():
                    return 400, b"trailing bytes after the snapshot data\n"
        except (CodecError, _Truncated) as exc:
            log.warning("bad snapshot request from %x: %s", sender, exc)
            return 400, f"{exc}\n".encode()
        except TimeoutError:
            log.warning("receiving a snapshot from %x timed out", sender)
            return 408, b"snapshot not received in time\n"
        self.handler.step_peer_message(replace(m, snapshot=replace(m.snapshot, data=data)))
        self.snapshot_receive_success[m.frm] = self.snapshot_receive_success.get(m.frm, 0) + 1
        log.info("received database snapshot [index: %d, from: %x] successfully", index, m.frm)
        return 204, b""

    def metric_lines(self) -> list[str]:
        """etcd's snapshot-receive counters in Prometheus text form (for /metrics)."""
        out: list[str] = []
        for name, counts in (
            ("etcd_network_snapshot_receive_success", self.snapshot_receive_success),
            ("etcd_network_snapshot_receive_failures", self.snapshot_receive_failures),
        ):
            out.append(f"# TYPE {name} counter")
            out += [f'{name}{{From="{pid:x}"}} {n}' for pid, n in sorted(counts.items())]
        return out

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

    def _from_removed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == FROM_HEADER.lower().encode():
                try:
                    return self.handler.is_removed_member(int(value, 16))
                except ValueError:
                    return False
        return False

    async def _members_route(self, scope: Scope, send: Send, path: str, method: str) -> None:
        """GET /members (no cluster-id check: a joining member learns it here) and
        POST /members/promote/<id> (a follower forwards a promote to the leader)."""
        cid = [(CLUSTER_ID_HEADER.lower().encode(), self._cid)]
        if path == "/members":
            if method != "GET":
                await _respond(send, 405, b"Method Not Allowed\n", [(b"allow", b"GET")])
                return
            await _respond(send, 200, self.handler.members_json(), [*cid, (b"content-type", b"application/json")])
            return
        if method != "POST":
            await _respond(send, 405, b"Method Not Allowed\n", [(b"allow", b"POST")])
            return
        if dict(scope["headers"]).get(b"x-etcd-cluster-id", b"").lower() != self._cid:
            await _respond(send, 412, b"cluster ID mismatch\n")
            return
        from store.errors import MembershipError, ServerError

        try:
            await self.handler.promote_as_leader(int(path.rsplit("/", 1)[1], 16))
        except ValueError:
            await _respond(send, 400, b"bad member id\n")
            return
        except MembershipError as exc:
            await _respond(send, 409, orjson.dumps({"kind": exc.kind, "message": exc.message}), cid)
            return
        except ServerError as exc:
            await _respond(send, 503, f"{exc.cause}\n".encode())
            return
        await _respond(send, 204, b"", cid)

    async def _propose(self, send: Send, body: bytes, conf: bool) -> None:
        try:
            self.handler.propose_forwarded(body, conf)
        except ValueError:
            await _respond(send, 400, b"undecodable proposal\n")
            return
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
