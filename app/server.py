"""EtcdServer: the raft node, the applier, the waiters, and the process around them.

Invariants:
- every write (and quorum read) is a log entry; its HTTP answer is the result of applying it,
  delivered through a waiter keyed by a request id carried in the entry;
- time enters through the log: only the leader reads the clock for expiry (V2Sync);
- internal writes mirror etcd's (member add, publish, cluster version under /0) so v2 store
  indices match a fresh etcd of the same shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvicorn

from app.compactor import Compactor
from app.config import Config
from app.peers import ForwardOutcome, PeerApp, PeerTransport
from app.v3backend import V3BackendMixin
from app.version import ETCD_CLUSTER_VERSION
from raft.core.errors import NotLeader, ProposalDropped, Stopped
from raft.core.types import Entry, EntryType, Message, StateType
from raft.node import NodeOptions, RaftNode, Transport
from store.apply import Applier, Result
from store.commands import Command, Noop, V2Create, V2Set, V2Sync, V2Update, V3Compact, decode, encode
from store.errors import (
    LeaderUnknown,
    NodeExists,
    RequestTimeout,
    ServerError,
    UnsupportedChange,
    V3Compacted,
)
from store.errors import Stopped as ServerStopped
from store.v2.tree import V2Store
from v2api.backend import MemberInfo

log = logging.getLogger("etcdpy")

SYNC_INTERVAL_S = 0.5  # etcd: the leader proposes a v2 SYNC every 500 ms while TTL keys exist
FORWARD_RETRY_S = 0.05  # pause before offering a refused forwarded proposal again
BOOTSTRAP_POLL_S = 0.02


def member_id_for(peer_urls: tuple[str, ...], token: str) -> int:
    """etcd membership.NewMember: sha1(sorted peer URLs + cluster token), first 8 bytes."""
    b = "".join(sorted(peer_urls)).encode() + token.encode()
    return int(struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0])


def cluster_id_for(member_ids: list[int]) -> int:
    """etcd RaftCluster.genID: sha1 of the sorted member ids, big endian, first 8 bytes."""
    b = b"".join(struct.pack(">Q", i) for i in sorted(member_ids))
    return int(struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0])


def load_identity(path: Path) -> tuple[int, int, tuple[int, ...]] | None:
    """The member ID, cluster ID and initial voters recorded at first start, if any."""
    try:
        o = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RuntimeError(f"{path}: unreadable member identity: {exc}") from exc
    return int(o["member_id"], 16), int(o["cluster_id"], 16), tuple(int(p, 16) for p in o["peers"])


def save_identity(path: Path, member_id: int, cluster_id: int, peers: tuple[int, ...]) -> None:
    """Write durably: temp file, fsync, rename, fsync the directory."""
    data = orjson.dumps(
        {
            "member_id": format(member_id, "x"),
            "cluster_id": format(cluster_id, "x"),
            "peers": [format(p, "x") for p in peers],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _rfc3339nano_local(ns: int) -> str:
    from v2api.render import rfc3339nano

    return rfc3339nano(ns)


def go_duration(ns: int) -> str:
    """Go time.Duration.String() for non-negative durations."""
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(f"{ns / 1000:.3f}") + "µs"
    if ns < 1_000_000_000:
        return _trim(f"{ns // 1_000_000}.{ns % 1_000_000:06d}") + "ms"
    secs, frac = divmod(ns, 1_000_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    sec = _trim(f"{s}.{frac:09d}") + "s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


def _trim(s: str) -> str:
    return s.rstrip("0").rstrip(".") if "." in s else s


class EtcdServer(V3BackendMixin):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._peer_urls_by_name: dict[str, tuple[str, ...]] = {}
        for name, url in cfg.initial_cluster:
            self._peer_urls_by_name.setdefault(name, ())
            self._peer_urls_by_name[name] += (url,)
        self._member_ids = {
            name: member_id_for(urls, cfg.initial_cluster_token)
            for name, urls in self._peer_urls_by_name.items()
        }
        data_dir = Path(cfg.data_dir)
        self._identity_path = data_dir / "member" / "identity.json"
        identity = load_identity(self._identity_path)
        if identity is not None:
            # etcd reads its IDs back from the data dir: flags only matter on first start
            self._id, self._cluster_id, peers = identity
        else:
            self._id = self._member_ids[cfg.name]
            self._cluster_id = cluster_id_for(list(self._member_ids.values()))
            peers = tuple(sorted(self._member_ids.values()))
        self._peers = peers
        self.applier = Applier(clock=time.time_ns)
        self._waiters: dict[int, asyncio.Future[Result]] = {}
        # etcd idutil.Generator: the member ID's low 16 bits on top, so ids never collide across
        # members; then milliseconds at start and a counter, so they do not repeat across restarts.
        self._req_prefix = (self._id & 0xFFFF) << 48
        self._next_req = ((time.time_ns() // 1_000_000) & 0xFF_FFFF_FFFF) << 8
        peer_urls = {self._member_ids[n]: urls for n, urls in self._peer_urls_by_name.items()}
        self.peer_transport: PeerTransport | None = None
        self.peer_app: PeerApp | None = None
        transport: Transport | None = None
        if len(peers) > 1:
            self.peer_transport = PeerTransport(self._id, self._cluster_id, peer_urls)
            self.peer_app = PeerApp(self)
            transport = self.peer_transport
        wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else data_dir / "member" / "wal"
        self.node = RaftNode(
            NodeOptions(
                node_id=self._id,
                peers=self._peers,
                wal_dir=wal_dir,
                snap_dir=data_dir / "member" / "snap",
                heartbeat_interval_s=cfg.heartbeat_interval_ms / 1000,
                election_ticks=max(2, cfg.election_timeout_ms // cfg.heartbeat_interval_ms),
                fsync=not cfg.unsafe_no_fsync,
                snapshot_count=cfg.snapshot_count,
                max_snapshots=cfg.max_snapshots,
                max_wals=cfg.max_wals,
            ),
            apply=self._apply_entry,
            take_snapshot=self.applier.snapshot,
            restore=self.applier.restore,
            transport=transport,
            on_leader_change=self._leader_changed,
        )
        self._start_ns = time.time_ns()
        self._leader_since_ns = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.published = False  # True once this member's start-up writes are applied (readiness)
        self.ready = asyncio.Event()  # set with `published`: serve clients (etcd ReadyNotify)
        self.request_timeout_s = 5 + 2 * cfg.election_timeout_ms / 1000

    # ---- Backend protocol ------------------------------------------------------------------

    @property
    def v2(self) -> V2Store:
        return self.applier.v2

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def member_id(self) -> int:
        return self._id

    def raft_index_term(self) -> tuple[int, int]:
        return self.node.committed_index, self.node.term

    def now_ns(self) -> int:
        return time.time_ns()

    def _new_request_id(self) -> int:
        self._next_req += 1
        return self._req_prefix | (self._next_req & 0xFFFF_FFFF_FFFF)

    async def propose(self, cmd: Command) -> Result:
        req_id = self._new_request_id()
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        try:
            data = encode(req_id, cmd)
            if self.peer_transport is None:
                try:
                    self.node.propose(data)
                except (NotLeader, ProposalDropped):
                    raise LeaderUnknown() from None
                except Stopped:
                    raise ServerStopped() from None
                timeout_s = self.request_timeout_s
            else:
                deadline = time.monotonic() + self.request_timeout_s
                await self._propose_or_forward(data, deadline)
                timeout_s = max(0.0, deadline - time.monotonic())
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            except TimeoutError:
                raise RequestTimeout() from None
        finally:
            self._waiters.pop(req_id, None)

    async def _propose_or_forward(self, data: bytes, deadline: float) -> None:
        """Get `data` into the leader's log: directly when leader, else through its peer URL.

        The waiter is already registered: this member answers the client when its own apply
        loop reaches the entry, so the answer carries this member's X-Raft-* view (etcd
        forwards MsgProp the same way). Retries only what the leader certainly refused.
        """
        transport = self.peer_transport
        assert transport is not None
        while True:
            lead = self.node.lead
            if lead == self._id:
                try:
                    self.node.propose(data)
                    return
                except Stopped:
                    raise ServerStopped() from None
                except (NotLeader, ProposalDropped):
                    pass  # lost leadership (or transferring) in between: look again
            elif lead:
                result = await transport.forward(lead, data)
                if result.outcome is not ForwardOutcome.REFUSED:
                    return  # accepted, or maybe accepted: wait for the apply (or time out)
            if self.node.failure is not None:
                raise ServerStopped()
            if time.monotonic() + FORWARD_RETRY_S >= deadline:
                raise LeaderUnknown() if not self.node.lead else RequestTimeout()
            await asyncio.sleep(FORWARD_RETRY_S)

    async def linearizable_read(self) -> None:
        """Wait until a ReadIndex point (Raft thesis §6.4) is applied here; no log entry.

        Raises LeaderUnknown when no leader was found in time, RequestTimeout when the round
        or the apply did not finish in time, Stopped when the node stops.
        """
        try:
            await self.node.read_index(self.request_timeout_s)
        except Stopped:
            raise ServerStopped() from None
        except TimeoutError:
            raise (LeaderUnknown() if not self.node.lead else RequestTimeout()) from None

    # ---- peer side (app.peers.PeerHandler) ---------------------------------------------------

    def step_peer_message(self, msg: Message) -> None:
        self.node.step(msg)

    def propose_forwarded(self, data: bytes) -> None:
        """A follower's proposal: append it if leader (NotLeader/ProposalDropped otherwise)."""
        self.node.propose(data)

    def members(self) -> list[MemberInfo]:
        """Membership as recorded in the v2 store under /0/members (as etcd 3.4 keeps it)."""
        out: list[MemberInfo] = []
        root = self.v2.peek("/0/members", recursive=True)
        for m in (root.nodes or []) if root is not None else []:
            mid = int(m.key.rsplit("/", 1)[1], 16)
            raft_attrs: dict[str, Any] = {}
            attrs: dict[str, Any] = {}
            for child in m.nodes or []:
                if child.key.endswith("/raftAttributes") and child.value:
                    raft_attrs = orjson.loads(child.value)
                elif child.key.endswith("/attributes") and child.value:
                    attrs = orjson.loads(child.value)
            out.append(
                MemberInfo(
                    id=mid,
                    name=str(attrs.get("name", "")),
                    peer_urls=tuple(raft_attrs.get("peerURLs") or ()),
                    client_urls=tuple(attrs.get("clientURLs") or ()),
                )
            )
        return out

    def leader_id(self) -> int:
        return self.node.lead

    async def update_member_peer_urls(self, member_id: int, peer_urls: list[str]) -> None:
        """etcd UpdateRaftAttributes: the member's raftAttributes rewritten in the v2 store.

        With one member there is no peer traffic to re-route, so this is the whole change; a
        multi-member cluster will carry it as a conf change first (cluster issue).
        """
        if len(self._peers) > 1:
            raise UnsupportedChange("runtime membership changes need the cluster work")
        value = orjson.dumps({"peerURLs": list(peer_urls)}).decode()
        result = await self.propose(V2Update(f"/0/members/{member_id:x}/raftAttributes", value, None, False))
        if isinstance(result, Exception):
            raise result

    def self_stats(self) -> dict[str, Any]:
        now = time.time_ns()
        return {
            "name": self.cfg.name,
            "id": format(self._id, "x"),
            "state": self.node.state.value,
            "startTime": _rfc3339nano_local(self._start_ns),
            "leaderInfo": {
                "leader": format(self.node.lead, "x"),
                "uptime": go_duration(now - self._leader_since_ns if self._leader_since_ns else 0),
                "startTime": _rfc3339nano_local(self._leader_since_ns or self._start_ns),
            },
            "recvAppendRequestCnt": self.peer_app.recv_append_count if self.peer_app else 0,
            "sendAppendRequestCnt": self.peer_transport.sent_append_count if self.peer_transport else 0,
        }

    def leader_stats(self) -> dict[str, Any] | None:
        if self.node.state is not StateType.LEADER:
            return None
        followers = self.peer_transport.follower_stats() if self.peer_transport else {}
        return {"leader": format(self._id, "x"), "followers": followers}

    async def health(self) -> bool:
        if not self.node.lead:
            return False
        try:
            await asyncio.wait_for(self.propose(Noop()), 1.0)
        except (ServerError, TimeoutError):
            return False
        return True

    def cluster_version(self) -> str | None:
        node = self.v2.peek("/0/version")
        return node.value if node is not None else None

    # ---- apply -----------------------------------------------------------------------------

    def _apply_entry(self, entry: Entry) -> None:
        if entry.type is not EntryType.NORMAL or not entry.data:
            self.applier.applied_index = entry.index
            return
        req_id, cmd = decode(entry.data)
        result = self.applier.apply(entry.index, cmd)
        fut = self._waiters.get(req_id)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _leader_changed(self, lead: int) -> None:
        # /v2/stats/self leaderInfo: when the current leader's reign began, as this member saw it
        self._leader_since_ns = time.time_ns() if lead else 0
        if lead == self._id and self.peer_transport is not None:
            self.peer_transport.reset_stats()  # etcd: a new leader starts new follower stats
        if lead:
            log.info("%x: leader is %x at term %d", self._id, lead, self.node.term)

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self.node.open()
        if not self._identity_path.exists():
            save_identity(self._identity_path, self._id, self._cluster_id, self._peers)

    async def start(self) -> None:
        if self.peer_transport is not None:
            self.peer_transport.start(self.node)
        self.node.start()
        loop = asyncio.get_running_loop()
        bootstrap = self._bootstrap() if self.peer_transport is None else self._bootstrap_cluster()
        self._tasks = [
            loop.create_task(bootstrap),
            loop.create_task(self._sync_loop()),
            loop.create_task(self.run_lease_expiry()),
            loop.create_task(self._compactor().run()),
        ]

    def _compactor(self) -> Compactor:
        async def compact(revision: int) -> bool:
            try:
                result = await self.propose(V3Compact(revision))
            except ServerError:
                return False
            # etcd treats "already compacted" as success for its compactors
            return not isinstance(result, Exception) or isinstance(result, V3Compacted)

        return Compactor(
            mode=self.cfg.auto_compaction_mode,
            retention=self.cfg.compaction_retention(),
            current_revision=lambda: self.applier.v3.current_revision,
            compact=compact,
            is_leader=lambda: self.node.lead == self._id,
        )

    async def _bootstrap(self) -> None:
        """etcd's internal writes after start: member add (new cluster), publish, cluster version."""
        deadline = time.monotonic() + 30
        while self.node.lead == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        while True:
            try:
                await self._internal_writes()
                return
            except ServerError as exc:
                log.warning("publishing member attributes failed (%s); retrying", exc.cause)
                await asyncio.sleep(0.5)

    async def _internal_writes(self) -> None:
        mid = format(self._id, "x")
        if self.node.lead != self._id:
            return
        for name, member_id in sorted(self._member_ids.items(), key=lambda kv: kv[1]):
            if member_id not in self._peers:
                continue  # flags changed since this data dir was created; the dir wins
            path = f"/0/members/{member_id:x}/raftAttributes"
            if self.v2.peek(path) is None:
                value = orjson.dumps({"peerURLs": list(self._peer_urls_by_name[name])}).decode()
                result = await self.propose(V2Create(path, value, False, False, None))
                if isinstance(result, Exception) and not isinstance(result, NodeExists):
                    log.error("recording member %x failed: %r", member_id, result)
        attrs = orjson.dumps(
            {"name": self.cfg.name, "clientURLs": list(self.cfg.advertise_client_urls)}
        ).decode()
        await self.propose(V2Set(f"/0/members/{mid}/attributes", attrs, False, None, False))
        if self.cluster_version() is None:
            await self.propose(V2Set("/0/version", ETCD_CLUSTER_VERSION, False, None, False))
        self.published = True
        self.ready.set()

    async def _bootstrap_cluster(self) -> None:
        """The same internal writes with several members, in etcd's order.

        The leader (once caught up with its predecessors' writes) records every member's
        raftAttributes that is missing — etcd does it by applying the bootstrap conf changes,
        before anything else. Each member then publishes its own attributes, forwarded to the
        leader like any write. The leader sets the cluster version once every member has
        published (etcd decides it from all members' versions). A fresh 3-member cluster thus
        ends at store index 7 (3 adds, 3 publishes, 1 version) and raft index 8.
        """
        publisher = asyncio.get_running_loop().create_task(self._publish_self())
        try:
            while not (publisher.done() and self.cluster_version() is not None):
                try:
                    if self.node.leader_caught_up:
                        await self._leader_internal_writes()
                except ServerError as exc:
                    log.warning("cluster start-up write failed (%s); retrying", exc.cause)
                    await asyncio.sleep(0.5)
                await asyncio.sleep(BOOTSTRAP_POLL_S)
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher

    async def _leader_internal_writes(self) -> None:
        for name, member_id in sorted(self._member_ids.items(), key=lambda kv: kv[1]):
            if member_id not in self._peers:
                continue
            path = f"/0/members/{member_id:x}/raftAttributes"
            if self.v2.peek(path) is None:
                value = orjson.dumps({"peerURLs": list(self._peer_urls_by_name[name])}).decode()
                result = await self.propose(V2Create(path, value, False, False, None))
                if isinstance(result, Exception) and not isinstance(result, NodeExists):
                    log.error("recording member %x failed: %r", member_id, result)
        if self.cluster_version() is None and all(
            self.v2.peek(f"/0/members/{m:x}/attributes") is not None for m in self._peers
        ):
            await self.propose(V2Set("/0/version", ETCD_CLUSTER_VERSION, False, None, False))

    async def _publish_self(self) -> None:
        """etcd publish(): this member's name and client URLs, once per start, after it is known."""
        mid = format(self._id, "x")
        while self.v2.peek(f"/0/members/{mid}/raftAttributes") is None:
            await asyncio.sleep(BOOTSTRAP_POLL_S)
        attrs = orjson.dumps(
            {"name": self.cfg.name, "clientURLs": list(self.cfg.advertise_client_urls)}
        ).decode()
        while True:
            try:
                result = await self.propose(V2Set(f"/0/members/{mid}/attributes", attrs, False, None, False))
            except ServerError as exc:
                log.warning("publishing member attributes failed (%s); retrying", exc.cause)
                await asyncio.sleep(0.5)
                continue
            if isinstance(result, Exception):
                log.error("publishing member attributes failed: %r", result)
            break
        self.published = True
        self.ready.set()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if self.node.lead == self._id and self.v2.has_ttl_keys():
                with contextlib.suppress(ServerError):
                    await self.propose(V2Sync(time.time_ns()))

    def close_watchers(self) -> None:
        hub = self.v2.hub
        for group in list(hub.watchers.values()):
            for w in list(group):
                w.remove()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.close_watchers()
        await self.node.stop()
        if self.peer_transport is not None:
            await self.peer_transport.stop()


# ---- process --------------------------------------------------------------------------------


def _bind(url: str) -> socket.socket:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if host == "localhost":
        host = "127.0.0.1"
    port = parts.port or 2379
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: etcdpy stops the server, then closes the WAL."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


async def serve(cfg: Config) -> int:
    from app.asgi import ClientApp

    server = EtcdServer(cfg)
    try:
        server.open()
    except Exception as exc:
        print(f"etcdpy: cannot open data dir {cfg.data_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        socks = [_bind(u) for u in cfg.listen_client_urls]
        peer_socks = [_bind(u) for u in cfg.listen_peer_urls] if server.peer_app is not None else []
    except OSError as exc:
        print(f"etcdpy: listen tcp: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_task = loop.create_task(stop.wait())
    peer_server: _QuietServer | None = None
    peer_task: asyncio.Task[None] | None = None
    if server.peer_app is not None:
        # Peers first: the other members need us to elect a leader before anyone is ready.
        peer_server = _QuietServer(_uvicorn_config(server.peer_app, keep_alive_s=120))
        peer_task = loop.create_task(peer_server.serve(sockets=peer_socks))
        log.info("etcdpy serving peer traffic on %s", ", ".join(cfg.listen_peer_urls))
    await server.start()
    serve_task: asyncio.Task[None] | None = None
    userver: _QuietServer | None = None
    if server.peer_app is not None:
        # etcd serves clients only once this member has published itself (ReadyNotify); the
        # bound sockets queue connections meanwhile.
        ready_task = loop.create_task(server.ready.wait())
        await asyncio.wait({ready_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        ready_task.cancel()
    if not stop.is_set():
        app = ClientApp(server, cors=cfg.cors, enable_v2=cfg.enable_v2, client_urls=cfg.advertise_client_urls)
        userver = _QuietServer(_uvicorn_config(app, keep_alive_s=30))
        serve_task = loop.create_task(userver.serve(sockets=socks))
        log.info("etcdpy serving client requests on %s", ", ".join(cfg.listen_client_urls))
        await asyncio.wait({serve_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    # Watches never end on their own: close them so the graceful shutdown can finish.
    server.close_watchers()
    server.close_v3_streams()
    if userver is not None and serve_task is not None:
        userver.should_exit = True
        with contextlib.suppress(Exception):
            await serve_task
    await server.stop()
    if peer_server is not None and peer_task is not None:
        peer_server.should_exit = True
        with contextlib.suppress(Exception):
            await peer_task
    stop_task.cancel()
    return 0


def _uvicorn_config(app: Any, *, keep_alive_s: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="httptools",
        loop="none",
        lifespan="off",
        server_header=False,
        date_header=True,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=1,
        backlog=2048,
    )


def run(cfg: Config) -> int:
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO)
        if cfg.log_level != "warn"
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every peer POST at INFO; only its warnings are worth a line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvloop

        return uvloop.run(serve(cfg))
    except ImportError:
        return asyncio.run(serve(cfg))
