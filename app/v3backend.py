"""V3BackendMixin: the v3 gateway's Backend (v3gateway.backend.V3Backend) on top of EtcdServer.

Invariants:
- every v3 write is a log entry (V3Put, V3DeleteRange, V3Txn, V3Compact, V3LeaseGrant,
  V3LeaseRevoke); the answer is its apply result, and a V3Error result becomes the gateway's
  GrpcError with the same message and code;
- a linearizable read on a one-voter cluster waits until everything committed is applied; with
  more voters it is a ReadIndex round with the leader (EtcdServer.linearizable_read), no entry;
- lease *time* lives here, on the leader only, as in etcd's lessor: a monotonic deadline per
  lease, refreshed by keepalive without touching the log, reset (plus one election timeout)
  when this member becomes leader; `run_lease_expiry` proposes LeaseRevoke for expired leases.
  Followers never expire leases (STYLE §2: time enters through the log); they forward
  keepalive (and v3_lease_time_to_live) to the leader over the peer port, as etcd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar

from raft.core.errors import NotLeader, ProposalDropped
from raft.core.errors import Stopped as RaftStopped
from raft.core.types import StateType
from store.apply import ALARM_ACTIVATE, ALARM_NOSPACE, Result, txn_has_puts
from store.commands import (
    Command,
    V3Alarm,
    V3Compact,
    V3DeleteRange,
    V3LeaseGrant,
    V3LeaseRevoke,
    V3Put,
    V3Txn,
)
from store.errors import LeaderUnknown, MembershipError, RequestTimeout, ServerError, V3Error, V3NoSpace
from store.errors import Stopped as ServerStopped
from store.v3types import (
    CompactionRequest,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseInfo,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from v3gateway.backend import Alarm, LeaseTTL, Member, RaftStatus, Watcher
from v3gateway.errors import Code, GrpcError

if TYPE_CHECKING:
    from app.config import Config
    from app.peers import LeaseTTLTuple, PeerTransport
    from raft.node import RaftNode
    from store.apply import Applier
    from v2api.backend import MemberInfo

log = logging.getLogger("etcdpy.v3")

LEASE_EXPIRY_INTERVAL_S: Final = 0.5  # etcd lessor: revokeExpiredLeases every 500 ms
LINEARIZABLE_POLL_S: Final = 0.001
DEFAULT_QUOTA_BYTES: Final = 2 << 30  # etcd: --quota-backend-bytes 0 means 2 GiB
LEASE_COST_BYTES: Final = 64  # a rough size of one lease record, as etcd's quota counts it
LEASE_FORWARD_RETRY_S: Final = 0.05

T = TypeVar("T")


class _LeaderNow(Exception):
    """This member became leader while forwarding a lease request: serve it locally."""


def _txn_put_bytes(req: TxnRequest) -> int:
    total = 0
    for op in (*req.success, *req.failure):
        if op.request_put is not None:
            total += len(op.request_put.key) + len(op.request_put.value)
        elif op.request_txn is not None:
            total += _txn_put_bytes(op.request_txn)
    return total


def _grpc(err: V3Error) -> GrpcError:
    return GrpcError(err.message, err.grpc_code)


class V3BackendMixin:
    """Mixed into app.server.EtcdServer, which provides the attributes declared below."""

    if TYPE_CHECKING:
        applier: Applier
        node: RaftNode
        cfg: Config
        request_timeout_s: float
        peer_transport: PeerTransport

        @property
        def cluster_id(self) -> int: ...

        @property
        def member_id(self) -> int: ...

        async def propose(self, cmd: Command) -> Result: ...

        def propose_local(self, cmd: Command, on_result: Callable[[Result | ServerError], None]) -> bool: ...

        async def linearizable_read(self) -> None: ...

        def members(self) -> list[MemberInfo]: ...

        async def add_member(self, peer_urls: list[str], is_learner: bool) -> MemberInfo: ...

        async def remove_member(self, member_id: int) -> None: ...

        async def update_member(self, member_id: int, peer_urls: list[str]) -> None: ...

        async def promote_member(self, member_id: int) -> None: ...

        async def transfer_leadership(self, target: int, timeout_s: float) -> bool: ...

        def leader_id(self) -> int: ...

    _v3_stop_event: asyncio.Event | None = None
    _lease_deadlines: dict[int, float]
    _lease_leader_term: int = 0
    _lease_id_suffix: int = 0

    # ---- plumbing ----------------------------------------------------------------------------

    def raft_status(self) -> RaftStatus:
        n = self.node
        return RaftStatus(n.committed_index, n.applied_index, n.term, n.lead)

    def v3_revision(self) -> int:
        return self.applier.v3.current_revision

    def v3_limits(self) -> tuple[int, int]:
        return self.cfg.max_request_bytes, self.cfg.max_txn_ops

    def v3_stopping(self) -> asyncio.Event:
        if self._v3_stop_event is None:
            self._v3_stop_event = asyncio.Event()
        return self._v3_stop_event

    def close_v3_streams(self) -> None:
        """End every open v3 stream (watch, keepalive): call before the HTTP server shuts down."""
        self.v3_stopping().set()

    async def _v3_write(self, cmd: Command) -> object:
        result = await self.propose(cmd)
        if isinstance(result, V3Error):
            raise _grpc(result)
        return result

    async def _linearizable_read(self) -> None:
        """etcd linearizableReadNotify, simplified (see the module invariants)."""
        node = self.node
        if node.lead == self.member_id and node.conf_state.voters == (self.member_id,):
            deadline = time.monotonic() + self.request_timeout_s
            while node.applied_index < node.committed_index:
                if time.monotonic() > deadline:
                    raise RequestTimeout()
                await asyncio.sleep(LINEARIZABLE_POLL_S)
            return
        await self.linearizable_read()

    # ---- kv ------------------------------------------------------------------------------------

    async def v3_range(self, req: RangeRequest) -> RangeResponse:
        if not req.serializable:
            await self._linearizable_read()
        try:
            return self.applier.v3.range(req)
        except V3Error as err:
            raise _grpc(err) from None

    def v3_read_ready(self) -> bool:
        # _linearizable_read's immediate case: the only voter, leading, with its log applied
        node = self.node
        return (
            node.lead == self.member_id
            and node.conf_state.voters == (self.member_id,)
            and node.applied_index >= node.committed_index
        )

    def v3_range_now(self, req: RangeRequest) -> RangeResponse | None:
        if not req.serializable and not self.v3_read_ready():
            return None  # _linearizable_read would wait
        try:
            return self.applier.v3.range(req)
        except V3Error:
            return None  # v3_range answers it as the gRPC error

    def v3_put_local(self, req: PutRequest, on_result: Callable[[Result | ServerError], None]) -> bool:
        quota = self.cfg.quota_backend_bytes
        if quota >= 0 and self.applier.v3.db_size() + len(req.key) + len(req.value) > (
            quota or DEFAULT_QUOTA_BYTES
        ):
            return False  # _check_quota raises the alarm through the log
        return self.propose_local(V3Put(req), on_result)

    async def _check_quota(self, cost: int) -> None:
        """etcd quotaKVServer: past --quota-backend-bytes, raise NOSPACE through the log and refuse."""
        quota = self.cfg.quota_backend_bytes
        if quota < 0:
            return  # etcd: a negative quota disables the check
        limit = quota or DEFAULT_QUOTA_BYTES
        if self.applier.v3.db_size() + cost <= limit:
            return
        await self.propose(V3Alarm(ALARM_ACTIVATE, self.member_id, ALARM_NOSPACE))
        raise _grpc(V3NoSpace())

    async def v3_put(self, req: PutRequest) -> PutResponse:
        await self._check_quota(len(req.key) + len(req.value))
        r = await self._v3_write(V3Put(req))
        assert isinstance(r, PutResponse), r
        return r

    async def v3_delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        r = await self._v3_write(V3DeleteRange(req))
        assert isinstance(r, DeleteRangeResponse), r
        return r

    async def v3_txn(self, req: TxnRequest) -> TxnResponse:
        if txn_has_puts(req):
            await self._check_quota(_txn_put_bytes(req))
        r = await self._v3_write(V3Txn(req))
        assert isinstance(r, TxnResponse), r
        return r

    async def v3_compact(self, req: CompactionRequest) -> int:
        r = await self._v3_write(V3Compact(req.revision))
        assert isinstance(r, int), r
        return r

    def v3_watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
    ) -> Watcher:
        try:
            return self.applier.v3.watch(
                key, range_end, start_revision, prev_kv=prev_kv, no_put=no_put, no_delete=no_delete
            )
        except V3Error as err:
            raise _grpc(err) from None

    # ---- leases --------------------------------------------------------------------------------

    def _deadlines(self) -> dict[int, float]:
        try:
            return self._lease_deadlines
        except AttributeError:
            self._lease_deadlines = {}
            return self._lease_deadlines

    def min_lease_ttl_s(self) -> int:
        """etcd: ceil((3 * election ticks / 2) * heartbeat), 2 s with the default timing."""
        cfg = self.cfg
        election_ticks = max(1, cfg.election_timeout_ms // cfg.heartbeat_interval_ms)
        return math.ceil((3 * election_ticks // 2) * cfg.heartbeat_interval_ms / 1000)

    def _next_lease_id(self) -> int:
        """etcd idutil.Generator: member ID's low 16 bits, then milliseconds and a counter;
        masked to a positive int64 as etcd's LeaseGrant does."""
        if not self._lease_id_suffix:
            self._lease_id_suffix = ((time.time_ns() // 1_000_000) & ((1 << 40) - 1)) << 8
        existing = set(self.applier.v3.leases())
        while True:
            self._lease_id_suffix += 1
            lease_id = ((self.member_id & 0xFFFF) << 48 | (self._lease_id_suffix & ((1 << 48) - 1))) & (
                (1 << 63) - 1
            )
            if lease_id and lease_id not in existing:
                return lease_id

    async def v3_lease_grant(self, lease_id: int, ttl_s: int) -> tuple[int, int, int]:
        if lease_id == 0:
            lease_id = self._next_lease_id()
        ttl_s = max(ttl_s, self.min_lease_ttl_s())
        await self._check_quota(LEASE_COST_BYTES)
        r = await self._v3_write(V3LeaseGrant(lease_id, ttl_s))
        assert isinstance(r, LeaseInfo), r
        if self.node.state is StateType.LEADER:
            self._deadlines()[r.id] = time.monotonic() + r.ttl_s
        return r.id, r.ttl_s, self.v3_revision()

    async def v3_lease_revoke(self, lease_id: int) -> int:
        r = await self._v3_write(V3LeaseRevoke(lease_id))
        assert isinstance(r, int), r
        self._deadlines().pop(lease_id, None)
        return r

    def _require_lease_leader(self) -> None:
        """Raise NotLeader (leader known) or ProposalDropped (none) unless this member leads."""
        node = self.node
        if node.state is StateType.LEADER and node.lead == self.member_id:
            return
        if node.lead and node.lead != self.member_id:
            raise NotLeader(node.lead)
        raise ProposalDropped("no leader")

    async def _leader_caught_up_for_leases(self) -> None:
        """etcd waitAppliedIndex: a lease granted through another member may be committed but
        not yet applied here."""
        self._require_lease_leader()
        await self.node.wait_applied(self.node.committed_index, self.request_timeout_s)
        self._require_lease_leader()

    def _renew_local(self, lease_id: int) -> int:
        info = self.applier.v3.lease_get(lease_id)
        if info is None:
            return 0
        self._deadlines()[lease_id] = time.monotonic() + info.ttl_s
        return info.ttl_s

    async def _forward_to_lease_leader(self, call: Callable[[PeerTransport, int], Awaitable[T | None]]) -> T:
        """Ask the leader (etcd forwards lease keepalive/timetolive over the peer port) until
        it answers or the request timeout passes; both calls are idempotent, so retrying is safe."""
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            lead = self.node.lead
            if lead and lead != self.member_id:
                r = await call(self.peer_transport, lead)
                if r is not None:
                    return r
            if self.node.failure is not None:
                raise ServerStopped()
            if time.monotonic() + LEASE_FORWARD_RETRY_S >= deadline:
                raise LeaderUnknown() if not self.node.lead else RequestTimeout()
            await asyncio.sleep(LEASE_FORWARD_RETRY_S)
            if self.node.state is StateType.LEADER:
                raise _LeaderNow()

    async def v3_lease_renew(self, lease_id: int) -> int:
        while True:
            if self.node.state is StateType.LEADER:
                try:
                    await self._leader_caught_up_for_leases()
                except (NotLeader, ProposalDropped):
                    pass  # lost leadership meanwhile: forward
                except TimeoutError:
                    raise RequestTimeout() from None
                except RaftStopped:
                    raise ServerStopped() from None
                else:
                    return self._renew_local(lease_id)
            try:
                return await self._forward_to_lease_leader(lambda t, lead: t.lease_keepalive(lead, lease_id))
            except _LeaderNow:
                continue

    async def v3_lease_time_to_live(self, lease_id: int, *, keys: bool) -> LeaseTTL | None:
        """TimeToLive as the leader sees it: local on the leader, forwarded from a follower."""
        while True:
            if self.node.state is StateType.LEADER:
                return self.v3_lease_ttl(lease_id, keys=keys)
            try:
                found, ttl, granted, key_list = await self._forward_to_lease_leader(
                    lambda t, lead: t.lease_time_to_live(lead, lease_id, keys)
                )
            except _LeaderNow:
                continue
            return LeaseTTL(lease_id, ttl, granted, key_list) if found else None

    # ---- app.peers.PeerHandler: lease requests forwarded by a follower ---------------------------

    async def lease_keepalive_forwarded(self, lease_id: int) -> int:
        await self._leader_caught_up_for_leases()
        return self._renew_local(lease_id)

    async def lease_ttl_forwarded(self, lease_id: int, keys: bool) -> LeaseTTLTuple | None:
        await self._leader_caught_up_for_leases()
        info = self.v3_lease_ttl(lease_id, keys=keys)
        return None if info is None else (info.ttl_s, info.granted_ttl_s, info.keys)

    def v3_lease_ttl(self, lease_id: int, *, keys: bool) -> LeaseTTL | None:
        info = self.applier.v3.lease_get(lease_id)
        if info is None:
            return None
        deadline = self._deadlines().get(lease_id)
        remaining = info.ttl_s if deadline is None else int(deadline - time.monotonic())
        return LeaseTTL(info.id, remaining, info.ttl_s, info.keys if keys else ())

    def v3_leases(self) -> list[int]:
        return self.applier.v3.leases()

    def _sync_lease_deadlines(self) -> list[int]:
        """Leader only: give every lease a deadline; returns the expired ones."""
        deadlines = self._deadlines()
        now = time.monotonic()
        if self._lease_leader_term != self.node.term:
            # etcd lessor.Promote: a new leader restarts every lease, extended by one election
            # timeout, since it cannot know how long the old leader had let them run.
            self._lease_leader_term = self.node.term
            deadlines.clear()
            extend = self.cfg.election_timeout_ms / 1000
        else:
            extend = 0.0
        live = set()
        for lease_id in self.applier.v3.leases():
            live.add(lease_id)
            if lease_id not in deadlines:
                info = self.applier.v3.lease_get(lease_id)
                if info is not None:
                    deadlines[lease_id] = now + info.ttl_s + extend
        for lease_id in list(deadlines):
            if lease_id not in live:
                del deadlines[lease_id]
        return [i for i, d in deadlines.items() if d <= now]

    async def run_lease_expiry(self) -> None:
        """The leader's expiry loop: propose LeaseRevoke for every expired lease."""
        while True:
            await asyncio.sleep(LEASE_EXPIRY_INTERVAL_S)
            if self.node.state is not StateType.LEADER:
                self._lease_leader_term = 0
                self._deadlines().clear()
                continue
            for lease_id in self._sync_lease_deadlines():
                with contextlib.suppress(ServerError):
                    result = await self.propose(V3LeaseRevoke(lease_id))
                    if isinstance(result, V3Error):
                        log.debug("revoking expired lease %x: %s", lease_id, result.message)
                self._deadlines().pop(lease_id, None)

    # ---- maintenance ---------------------------------------------------------------------------

    def v3_hash(self) -> int:
        return self.applier.v3.hash()

    def v3_db_size(self) -> tuple[int, int]:
        v3 = self.applier.v3
        return v3.db_size(), v3.db_size_in_use()

    def v3_snapshot(self) -> bytes:
        return self.applier.snapshot()

    def v3_alarms(self) -> list[Alarm]:
        return [Alarm(m, a) for m, a in sorted(self.applier.alarms)]

    async def v3_alarm(self, action: int, member_id: int, alarm: int) -> list[Alarm]:
        """GET/ACTIVATE/DEACTIVATE through the log, as etcd replicates its alarm store."""
        r = await self._v3_write(V3Alarm(action, member_id, alarm))
        assert isinstance(r, tuple), r
        return [Alarm(m, a) for m, a in r]

    async def v3_move_leader(self, target_id: int) -> None:
        """etcd MoveLeader: the leader hands over to `target_id` and waits (bounded) for it."""
        if self.node.state is not StateType.LEADER:
            raise GrpcError("etcdserver: not leader", Code.FAILED_PRECONDITION)
        members = {m.id: m for m in self.members()}
        if target_id not in members or members[target_id].is_learner:
            raise GrpcError("etcdserver: bad leader transferee", Code.FAILED_PRECONDITION)
        if target_id == self.member_id:
            return
        if not await self.transfer_leadership(target_id, self.request_timeout_s):
            raise GrpcError("etcdserver: request timed out, leader transfer took too long", Code.UNAVAILABLE)

    # ---- cluster -------------------------------------------------------------------------------

    def v3_is_learner(self) -> bool:
        return self.member_id in self.node.conf_state.learners

    async def v3_member_add(self, peer_urls: list[str], is_learner: bool) -> Member:
        try:
            m = await self.add_member(peer_urls, is_learner)
        except MembershipError as exc:
            raise _membership_grpc(exc) from None
        return Member(m.id, m.name, m.peer_urls, m.client_urls, m.is_learner)

    async def v3_member_remove(self, member_id: int) -> None:
        try:
            await self.remove_member(member_id)
        except MembershipError as exc:
            raise _membership_grpc(exc) from None

    async def v3_member_update(self, member_id: int, peer_urls: list[str]) -> None:
        try:
            await self.update_member(member_id, peer_urls)
        except MembershipError as exc:
            raise _membership_grpc(exc) from None

    async def v3_member_promote(self, member_id: int) -> None:
        try:
            await self.promote_member(member_id)
        except MembershipError as exc:
            raise _membership_grpc(exc) from None

    def v3_members(self) -> list[Member]:
        return [Member(m.id, m.name, m.peer_urls, m.client_urls, m.is_learner) for m in self.members()]


# etcd v3rpc togRPCError for membership errors
_MEMBERSHIP_GRPC: dict[str, tuple[str, Code]] = {
    "id_exists": ("etcdserver: member ID already exist", Code.FAILED_PRECONDITION),
    "peer_url_exists": ("etcdserver: Peer URLs already exists", Code.FAILED_PRECONDITION),
    "id_not_found": ("etcdserver: member not found", Code.NOT_FOUND),
    "id_removed": ("etcdserver: member not found", Code.NOT_FOUND),
    "not_learner": ("etcdserver: can only promote a learner member", Code.FAILED_PRECONDITION),
    "too_many_learners": ("etcdserver: too many learner members in cluster", Code.FAILED_PRECONDITION),
    "learner_not_ready": (
        "etcdserver: can only promote a learner member which is in sync with leader",
        Code.FAILED_PRECONDITION,
    ),
    "not_enough_started": (
        "etcdserver: re-configuration failed due to not enough started members",
        Code.FAILED_PRECONDITION,
    ),
    "unhealthy": ("etcdserver: unhealthy cluster", Code.UNAVAILABLE),
}


def _membership_grpc(exc: MembershipError) -> GrpcError:
    message, code = _MEMBERSHIP_GRPC.get(exc.kind, (exc.message, Code.UNKNOWN))
    return GrpcError(message, code)
