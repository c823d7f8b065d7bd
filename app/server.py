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
import collections
import contextlib
import faulthandler
import gc
import hashlib
import io
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.compactor import Compactor
from app.config import Config
from app.httpserver import serve_asgi
from app.membership import (
    HEALTH_INTERVAL_S,
    LEARNER_READY_PERCENT,
    JoinError,
    JoinInfo,
    MemberChange,
    MemberOp,
    check_add,
    check_promote,
    check_remove,
    decode_change,
    discover_cluster,
    encode_change,
    is_removed,
    learner_not_ready,
    new_member_id,
    read_members,
    store_commands,
    validate,
)
from app.peers import ForwardOutcome, PeerApp, PeerTransport
from app.v3backend import V3BackendMixin
from app.version import ETCD_CLUSTER_VERSION
from raft.core.errors import NotLeader, ProposalDropped, Stopped
from raft.core.types import Entry, EntryType, Message, StateType
from raft.node import NodeOptions, RaftNode
from store.apply import Applier, Result
from store.commands import Command, CommandDecodeError, Noop, V2Set, V2Sync, V3Compact, decode, encode
from store.errors import (
    LeaderUnknown,
    MembershipError,
    RequestTimeout,
    ServerError,
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


ResultCallback = Callable[["Result | ServerError"], None]
CALLBACK_SWEEP_S = 0.25  # how often propose_local's timeouts are looked at
STOP_STUCK_S = 6.0  # a stop still running after this logs where it waits (tests SIGKILL after 10 s)


def _call_back(on_result: ResultCallback, result: Result | ServerError) -> None:
    try:
        on_result(result)
    except Exception:  # the apply loop must go on whatever an answer does
        log.exception("answering a proposal failed")


def _leading_req_id(data: bytes) -> int:
    """The request ID an encoded command starts with (`[id,tag,...`), or 0 if it does not."""
    end = data.find(b",", 1, 24)
    return int(data[1:end]) if end > 1 and data[1:end].isdigit() else 0


class EtcdServer(V3BackendMixin):
    def __init__(self, cfg: Config, *, joined: JoinInfo | None = None) -> None:
        """`joined`: this member joins a running cluster (--initial-cluster-state existing)."""
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
        bootstrap: tuple[bytes, ...] = ()
        peer_urls = {self._member_ids[n]: urls for n, urls in self._peer_urls_by_name.items()}
        if identity is not None:
            # etcd reads its IDs back from the data dir: flags only matter on first start
            self._id, self._cluster_id, peers = identity
        elif joined is not None:
            # the cluster's log (or snapshot) brings the membership, this member's add included
            self._id, self._cluster_id, peers = joined.member_id, joined.cluster_id, ()
            peer_urls = dict(joined.peer_urls)
        else:
            self._id = self._member_ids[cfg.name]
            self._cluster_id = cluster_id_for(list(self._member_ids.values()))
            peers = tuple(sorted(self._member_ids.values()))
            bootstrap = tuple(
                encode_change(0, MemberChange(MemberOp.ADD, mid, peer_urls[mid])) for mid in peers
            )
        self._peers = peers
        self.applier = Applier(clock=time.time_ns)
        self._waiters: dict[int, asyncio.Future[Result]] = {}
        # propose_local's proposals: request ID -> (the entry's data, its command, who gets the
        # result); (deadline, ID) in order
        self._callbacks: dict[int, tuple[bytes, Command, ResultCallback]] = {}
        self._callback_deadlines: collections.deque[tuple[float, int]] = collections.deque()
        # etcd idutil.Generator: the member ID's low 16 bits on top, so ids never collide across
        # members; then milliseconds at start and a counter, so they do not repeat across restarts.
        self._req_prefix = (self._id & 0xFFFF) << 48
        self._next_req = ((time.time_ns() // 1_000_000) & 0xFF_FFFF_FFFF) << 8
        # Every member has a peer listener and transport, as in etcd: a one-member cluster can grow.
        self.peer_transport = PeerTransport(self._id, self._cluster_id, peer_urls, on_removed=self._removed)
        self.peer_app = PeerApp(self)
        self.removed = asyncio.Event()  # set when this member learns it was removed: stop serving
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
                bootstrap=bootstrap,
                catch_up_entries=max(1, cfg.snapshot_catchup_entries),
            ),
            apply=self._apply_entry,
            take_snapshot=self.applier.take_snapshot,
            restore=self._restore,
            transport=self.peer_transport,
            on_leader_change=self._leader_changed,
        )
        self._start_ns = time.time_ns()
        self._leader_since_ns = 0
        self._leader_news = asyncio.Event()  # set (and replaced) on every leader change
        self._tasks: list[asyncio.Task[None]] = []
        self.published = False  # True once this member's start-up writes are applied (readiness)
        self.ready = asyncio.Event()  # set with `published`: serve clients (etcd ReadyNotify)
        self._version_lock = asyncio.Lock()
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
        return await self._propose_entry(req_id, encode(req_id, cmd), conf=False)

    def propose_local(self, cmd: Command, on_result: ResultCallback) -> bool:
        """propose() without a task or a Future, when this member leads: True if proposed, and
        then `on_result` gets the apply's result from the apply loop (or RequestTimeout, from
        the timeout sweep, after request_timeout_s to twice that), exactly once. False: use
        propose() (a follower forwards; a leader that is stepping down looks again)."""
        if self.node.lead != self._id:
            return False
        req_id = self._new_request_id()
        data = encode(req_id, cmd)
        try:
            self.node.propose(data)
        except (NotLeader, ProposalDropped, Stopped):
            return False
        self._callbacks[req_id] = (data, cmd, on_result)
        self._callback_deadlines.append((time.monotonic() + self.request_timeout_s, req_id))
        return True

    async def _time_out_callbacks(self) -> None:
        """propose_local's timeouts: proposals are applied in the order they were made, so
        the oldest deadlines lead the deque and the answered ones are dropped from its head."""
        deadlines = self._callback_deadlines
        callbacks = self._callbacks
        while True:
            await asyncio.sleep(CALLBACK_SWEEP_S)
            now = time.monotonic()
            while deadlines:
                deadline, req_id = deadlines[0]
                if req_id in callbacks and deadline > now:
                    break
                deadlines.popleft()
                pending = callbacks.pop(req_id, None)
                if pending is not None:
                    _call_back(pending[2], RequestTimeout())

    async def _propose_entry(self, req_id: int, data: bytes, *, conf: bool) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        try:
            deadline = time.monotonic() + self.request_timeout_s
            await self._propose_or_forward(data, deadline, conf=conf)
            try:
                # the waiter is this request's own: cancelling it on timeout harms nobody
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + deadline - time.monotonic()
                ):
                    return await fut
            except TimeoutError:
                raise RequestTimeout() from None
        finally:
            self._waiters.pop(req_id, None)

    async def _propose_or_forward(self, data: bytes, deadline: float, *, conf: bool = False) -> None:
        """Get `data` into the leader's log: directly when leader, else through its peer URL.

        The waiter is already registered: this member answers the client when its own apply
        loop reaches the entry, so the answer carries this member's X-Raft-* view (etcd
        forwards MsgProp the same way). Retries only what the leader certainly refused.
        """
        transport = self.peer_transport
        while True:
            news = self._leader_news  # before reading the leader: a change after it ends the pause
            lead = self.node.lead
            if lead == self._id:
                try:
                    if conf:
                        self.node.propose_conf_change(data)
                    else:
                        self.node.propose(data)
                    return
                except Stopped:
                    raise ServerStopped() from None
                except (NotLeader, ProposalDropped):
                    pass  # lost leadership (or transferring) in between: look again
            elif lead:
                result = await transport.forward(lead, data, conf=conf)
                if result.outcome is not ForwardOutcome.REFUSED:
                    return  # accepted, or maybe accepted: wait for the apply (or time out)
            if self.node.failure is not None:
                raise ServerStopped()
            if time.monotonic() + FORWARD_RETRY_S >= deadline:
                raise LeaderUnknown() if not self.node.lead else RequestTimeout()
            # A new leader (a start-up's first election, most often) ends the pause at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORWARD_RETRY_S):  # (not wait_for: see peers._sender)
                    await news.wait()

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

    def propose_forwarded(self, data: bytes, conf: bool) -> None:
        """A follower's proposal: append it if leader (NotLeader/ProposalDropped otherwise).

        ValueError if it does not decode: every member applies the log, and an entry no member
        can apply would stop them all, now and at every restart."""
        try:
            if conf:
                decode_change(data)
            else:
                decode(data)
        except (CommandDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"undecodable proposal: {exc}") from None
        if conf:
            self.node.propose_conf_change(data)
        else:
            self.node.propose(data)

    def members_json(self) -> bytes:
        return orjson.dumps(
            [
                {
                    "id": format(m.id, "x"),
                    "name": m.name,
                    "peerURLs": list(m.peer_urls),
                    "clientURLs": list(m.client_urls),
                }
                for m in self.members()
            ]
        )

    def members(self) -> list[MemberInfo]:
        """Membership as recorded in the v2 store under /0/members (as etcd 3.4 keeps it)."""
        return read_members(self.v2)

    def leader_id(self) -> int:
        return self.node.lead

    def is_removed_member(self, member_id: int) -> bool:
        return is_removed(self.v2, member_id)

    # ---- membership changes (conf-change entries; see app.membership) ----------------------

    def _peer_health(self) -> tuple[set[int], set[int]]:
        """(members reachable now, members reachable for HEALTH_INTERVAL_S); self in both."""
        now = time.monotonic()
        connected, healthy = {self._id}, {self._id}
        for m in self.members():
            since = self.peer_transport.active_since(m.id)
            if since is not None:
                connected.add(m.id)
                if now - since >= HEALTH_INTERVAL_S:
                    healthy.add(m.id)
        return connected, healthy

    async def add_member(self, peer_urls: list[str], is_learner: bool) -> MemberInfo:
        change = MemberChange(
            MemberOp.ADD_LEARNER if is_learner else MemberOp.ADD,
            new_member_id(tuple(peer_urls)),
            tuple(peer_urls),
        )
        # etcd checks the quorum rules first; the change itself is validated as it applies
        if self.cfg.strict_reconfig_check:
            check_add(self.members(), self._peer_health()[1], is_learner)
        validate(self.v2, change)
        await self._change_membership(change)
        return MemberInfo(change.member_id, "", change.peer_urls, (), is_learner)

    async def remove_member(self, member_id: int) -> None:
        change = MemberChange(MemberOp.REMOVE, member_id)
        if self.cfg.strict_reconfig_check:
            check_remove(self.members(), *self._peer_health(), member_id, self._id)
        validate(self.v2, change)
        await self._change_membership(change)

    async def update_member(self, member_id: int, peer_urls: list[str]) -> None:
        change = MemberChange(MemberOp.UPDATE, member_id, tuple(peer_urls))
        validate(self.v2, change)
        await self._change_membership(change)

    async def promote_member(self, member_id: int) -> None:
        """etcd PromoteMember: only the leader knows whether the learner caught up; others ask it."""
        change = MemberChange(MemberOp.PROMOTE, member_id)
        validate(self.v2, change)
        lead = self.node.lead
        if lead and lead != self._id:
            await self.peer_transport.promote(lead, member_id, self.request_timeout_s)
            return
        await self.promote_as_leader(member_id)

    async def promote_as_leader(self, member_id: int) -> None:
        change = MemberChange(MemberOp.PROMOTE, member_id)
        validate(self.v2, change)
        if self.node.state is not StateType.LEADER:
            raise LeaderUnknown()
        progress = self.node.progress()
        if (
            member_id not in progress
            or progress[member_id] < progress.get(self._id, 0) * LEARNER_READY_PERCENT
        ):
            raise learner_not_ready()
        if self.cfg.strict_reconfig_check:
            check_promote(self.members())
        await self._change_membership(change)

    async def _change_membership(self, change: MemberChange) -> None:
        req_id = self._new_request_id()
        result = await self._propose_entry(req_id, encode_change(req_id, change), conf=True)
        if isinstance(result, Exception):
            raise result

    def _apply_member_change(self, entry: Entry) -> Result:
        """Apply one CONF_CHANGE entry on this member: store, raft configuration, transport."""
        _, change = decode_change(entry.data)
        try:
            validate(self.v2, change)
        except MembershipError as exc:
            # Became invalid since it was proposed: a no-op everywhere, an error for the caller.
            self.applier.applied_index = entry.index
            return exc
        for cmd in store_commands(self.v2, change):
            self.applier.apply(entry.index, cmd)
        mid = change.member_id
        if change.op is MemberOp.ADD:
            self.node.apply_conf_change(voters_add=(mid,))
        elif change.op is MemberOp.ADD_LEARNER:
            self.node.apply_conf_change(learners_add=(mid,))
        elif change.op is MemberOp.PROMOTE:
            self.node.apply_conf_change(voters_add=(mid,))
        elif change.op is MemberOp.REMOVE:
            self.node.apply_conf_change(voters_remove=(mid,))
        if change.op is MemberOp.REMOVE:
            self.peer_transport.remove_peer(mid)
            if mid == self._id:
                self._removed()
        elif change.op in (MemberOp.ADD, MemberOp.ADD_LEARNER, MemberOp.UPDATE):
            self.peer_transport.set_peer(mid, change.peer_urls)
        log.info(
            "%x: applied membership change %s of %x at index %d", self._id, change.op.name, mid, entry.index
        )
        return None

    def _attributes_of_removed(self, path: str) -> bool:
        parts = path.split("/")  # "", "0", "members", id, "attributes"
        if len(parts) != 5 or parts[1:3] != ["0", "members"] or parts[4] != "attributes":
            return False
        try:
            return is_removed(self.v2, int(parts[3], 16))
        except ValueError:
            return False

    def _removed(self) -> None:
        if not self.removed.is_set():
            log.error("%x: the member has been permanently removed from the cluster", self._id)
            log.error("the data-dir used by this member must be removed")
            self.removed.set()

    def _restore(self, data: bytes) -> None:
        """A snapshot replaces the state machine, membership included: re-read the address book."""
        self.applier.restore(data)
        members = self.members()
        for pid in self.peer_transport.peer_ids() - {m.id for m in members}:
            self.peer_transport.remove_peer(pid)
        for m in members:
            self.peer_transport.set_peer(m.id, m.peer_urls)

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
        if entry.type is EntryType.CONF_CHANGE:
            req_id = decode_change(entry.data)[0]
            result = self._apply_member_change(entry)
        elif not entry.data:
            self.applier.applied_index = entry.index
            return
        else:
            data = entry.data
            req_id = _leading_req_id(data) if self._callbacks else 0
            pending = self._callbacks.get(req_id) if req_id else None
            if pending is not None and pending[0] is data:
                # this member's own proposal, still the very bytes it encoded: the command it
                # encoded them from is what decoding them would give (tests/unit/store/test_commands.py)
                cmd = pending[1]
            else:
                req_id, cmd = decode(data)
            if (
                isinstance(cmd, V2Set)
                and cmd.path.startswith("/0/")
                and self._attributes_of_removed(cmd.path)
            ):
                # etcd UpdateAttributes skips a removed member: no ghost entry, no store write
                self.applier.applied_index = entry.index
                result = None
            else:
                result = self.applier.apply(entry.index, cmd)
        fut = self._waiters.get(req_id)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
        elif self._callbacks:
            pending = self._callbacks.pop(req_id, None)
            if pending is not None:
                _call_back(pending[2], result)

    def _leader_changed(self, lead: int) -> None:
        # /v2/stats/self leaderInfo: when the current leader's reign began, as this member saw it
        self._leader_since_ns = time.time_ns() if lead else 0
        news, self._leader_news = self._leader_news, asyncio.Event()
        news.set()
        if lead == self._id:
            self.peer_transport.reset_stats()  # etcd: a new leader starts new follower stats
        if lead:
            log.info("%x: leader is %x at term %d", self._id, lead, self.node.term)

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self.node.open()
        if not self._identity_path.exists():
            save_identity(self._identity_path, self._id, self._cluster_id, self._peers)

    async def start(self) -> None:
        # The address book as the (snapshot-restored) store has it; flags fill in a fresh start.
        for m in self.members():
            self.peer_transport.set_peer(m.id, m.peer_urls)
        self.peer_transport.start(self.node)
        self.node.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._bootstrap_cluster()),
            loop.create_task(self._sync_loop()),
            loop.create_task(self.run_lease_expiry()),
            loop.create_task(self._compactor().run()),
            loop.create_task(self._time_out_callbacks()),
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

    async def _bootstrap_cluster(self) -> None:
        """etcd's internal writes after start, in etcd's order.

        The bootstrap conf changes (first entries of a fresh log) record every initial member.
        Each member then publishes its own name and client URLs, forwarded to the leader like
        any write. The leader sets the cluster version once every voter has published (etcd
        decides it from all members' versions). A fresh 3-member cluster thus ends at store
        index 7 (3 adds, 3 publishes, 1 version) and raft index 8 (+ the leader's empty entry).
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
        # Two callers (the bootstrap loop and the publisher) may get here at once: the lock and
        # the re-check keep it to one version write, as etcd writes it once.
        async with self._version_lock:
            voters = [m for m in self.members() if not m.is_learner]
            if self.cluster_version() is None and voters and all(m.name for m in voters):
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
        with contextlib.suppress(ServerError):
            if self.node.leader_caught_up:
                # the last member to publish on the leader decides the version at once (a single
                # member does so before it serves, as etcd's store index shows)
                await self._leader_internal_writes()
        self.published = True
        self.ready.set()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if self.node.lead == self._id and self.v2.has_ttl_keys():
                with contextlib.suppress(ServerError):
                    await self.propose(V2Sync(time.time_ns()))

    async def transfer_leadership(self, target: int, timeout_s: float) -> bool:
        """etcd MoveLeader: hand leadership to `target`, wait until it leads (True) or time out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lead = self.node.lead
            if lead == target:
                return True
            if self.node.state is not StateType.LEADER:
                if lead not in (0, target):
                    return False  # a third member leads now: the transfer did not happen
                await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000)
                continue  # between leaders (the target is campaigning): wait for it
            with contextlib.suppress(ServerStopped, Stopped):
                self.node.transfer_leadership(target)
            await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000)
        return self.node.lead == target

    async def hand_off_leadership(self) -> None:
        """etcd TransferLeadership on stop: a leader hands over to its most up-to-date voter,
        so the cluster does not wait out an election timeout for a planned stop."""
        if self.node.state is not StateType.LEADER:
            return
        progress = self.node.progress()
        voters = [v for v in self.node.conf_state.voters if v != self._id and v in progress]
        if not voters:
            return
        target = max(voters, key=lambda v: progress[v])
        timeout_s = 2 * self.cfg.election_timeout_ms / 1000
        if await self.transfer_leadership(target, timeout_s):
            log.info("%x: handed leadership to %x before stopping", self._id, target)
        else:
            log.warning("%x: leadership transfer to %x did not finish before stopping", self._id, target)

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


def _serve_http(
    app: Any, socks: list[socket.socket], *, kind: str, keep_alive_s: int, max_body_bytes: int
) -> tuple[asyncio.Task[None], Callable[[], None]]:
    """Serve `app` on the bound `socks` with the chosen HTTP server (cfg.http_server): its task
    and what stops it gracefully."""
    loop = asyncio.get_running_loop()
    if kind == "uvicorn":
        userver = _quiet_uvicorn(app, keep_alive_s=keep_alive_s)

        def stop_uvicorn() -> None:
            userver.should_exit = True

        return loop.create_task(userver.serve(sockets=socks)), stop_uvicorn
    stop = asyncio.Event()
    task = loop.create_task(
        serve_asgi(app, socks, keep_alive_s=keep_alive_s, stop=stop, graceful_s=1, max_body_bytes=max_body_bytes)
    )
    return task, stop.set


def _quiet_uvicorn(app: Any, *, keep_alive_s: int) -> Any:
    """uvicorn without its own signal handling: etcdpy stops the server, then closes the WAL.
    Imported only when chosen (~35 ms of every start otherwise)."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

    config = uvicorn.Config(
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
        proxy_headers=False,  # etcd trusts no X-Forwarded-* header; skips a middleware per request
    )
    return QuietServer(config)


async def serve(cfg: Config) -> int:
    from app.asgi import ClientApp

    joined: JoinInfo | None = None
    data_dir = Path(cfg.data_dir)
    if (
        cfg.initial_cluster_state == "existing"
        and load_identity(data_dir / "member" / "identity.json") is None
    ):
        try:
            joined = await discover_cluster(
                tuple(cfg.initial_advertise_peer_urls), [u for _, u in cfg.initial_cluster]
            )
        except JoinError as exc:
            print(f"etcdpy: {exc}", file=sys.stderr)
            return 1
    server = EtcdServer(cfg, joined=joined)
    # Restoring a snapshot builds ~1 node per key, all of them live: collections in between
    # would only re-walk them (~25% of a 100k-key restart).
    gc.disable()
    try:
        server.open()
    except Exception as exc:
        print(f"etcdpy: cannot open data dir {cfg.data_dir}: {exc}", file=sys.stderr)
        return 1
    finally:
        gc.enable()
    try:
        socks = [_bind(u) for u in cfg.listen_client_urls]
        peer_socks = [_bind(u) for u in cfg.listen_peer_urls]
    except OSError as exc:
        print(f"etcdpy: listen tcp: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_task = loop.create_task(stop.wait())
    removed_task = loop.create_task(server.removed.wait())
    ends = {stop_task, removed_task}
    # Peers first: the other members need us to elect a leader before anyone is ready.
    # The peer app checks its own body limits (snapshots up to MAX_SNAPSHOT_BYTES).
    peer_task, stop_peer_http = _serve_http(
        server.peer_app, peer_socks, kind=cfg.http_server, keep_alive_s=120, max_body_bytes=-1
    )
    log.info("etcdpy serving peer traffic on %s", ", ".join(cfg.listen_peer_urls))
    await server.start()
    serve_task: asyncio.Task[None] | None = None
    stop_client_http: Callable[[], None] | None = None
    # etcd serves clients only once this member has published itself (ReadyNotify); the
    # bound sockets queue connections meanwhile.
    ready_task = loop.create_task(server.ready.wait())
    await asyncio.wait({ready_task, *ends}, return_when=asyncio.FIRST_COMPLETED)
    ready_task.cancel()
    if not stop.is_set() and not server.removed.is_set():
        app = ClientApp(server, cors=cfg.cors, enable_v2=cfg.enable_v2, client_urls=cfg.advertise_client_urls)
        serve_task, stop_client_http = _serve_http(
            app, socks, kind=cfg.http_server, keep_alive_s=30, max_body_bytes=64 << 20
        )
        log.info(
            "etcdpy serving client requests on %s (%s)", ", ".join(cfg.listen_client_urls), cfg.http_server
        )
        _tune_gc()
        await asyncio.wait({serve_task, *ends}, return_when=asyncio.FIRST_COMPLETED)
    # A stop should take a few seconds at most; if it does not, say where it waits (the process
    # is then usually killed by whoever sent the SIGTERM, and this is all that is left of it).
    stuck = loop.call_later(STOP_STUCK_S, _log_stuck_stop)
    if stop.is_set() and not server.removed.is_set():
        await server.hand_off_leadership()
    if server.removed.is_set():
        # etcd stopWithDelay: keep raft and the transport up for a few heartbeats, so the others
        # learn the commit of this member's removal (without it two survivors may lack a quorum)
        await asyncio.sleep(10 * cfg.heartbeat_interval_ms / 1000)
    # Watches never end on their own: close them so the graceful shutdown can finish.
    server.close_watchers()
    server.close_v3_streams()
    if serve_task is not None and stop_client_http is not None:
        stop_client_http()
        with contextlib.suppress(Exception):
            await serve_task
    await server.stop()
    stop_peer_http()
    with contextlib.suppress(Exception):
        await peer_task
    for t in ends:
        t.cancel()
    stuck.cancel()
    return 0


def _log_stuck_stop() -> None:
    """Every task's stack and every thread's, for a stop that has not finished."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    log.warning("still stopping after %.0f s; tasks waiting:\n%s", STOP_STUCK_S, out.getvalue())
    faulthandler.dump_traceback(all_threads=True)


def _tune_gc() -> None:
    """Once serving: freeze what start-up made and collect young objects less often.

    Requests make few reference cycles, but the default gen-0 threshold (700) runs the
    collector every few requests and full collections walk the whole store (50-80 ms pauses
    measured at 100k keys); frozen objects are skipped by every collection. No collection
    first: start-up leaves no cyclic garbage worth one (none found at 100k keys, where the
    collection took ~60 ms before the first answer).

    Every write leaves a few objects that live on (store nodes, MVCC records, log entries), and
    each is walked once as young and once in the middle generation whatever the thresholds, so
    they decide the pauses, not the total: 50,000/20 let the middle generation grow to ~1M
    objects, walked in one ~260 ms pause (v3 put p99 212 ms at 64 connections); 10,000/10 keeps
    it under ~100k objects (20-45 ms pauses, p99 ~25 ms) at the same throughput (measured).
    Full collections (which walk the whole store) keep their old cadence, at most one per
    ~100M allocations (1000 x 10 x 10,000, as 100 x 20 x 50,000 was), and CPython's own rule
    adds that the long-lived objects must have grown by a quarter since the last one.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 1000)


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
