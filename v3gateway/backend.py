"""What the v3 gateway needs from the server, as a Protocol (app.v3backend.V3BackendMixin
gives app.server.EtcdServer these methods).

Contract for every coroutine here: failures are raised as v3gateway.errors.GrpcError (etcd's
message and gRPC code, e.g. store V3Error results converted by the server) or
store.errors.ServerError (leader lost, timeout, stopped: UNAVAILABLE). Writes go through the
log; their answers carry the revision after the write. Must not import app or raft.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from store.apply import Result
from store.errors import ServerError
from store.v3types import (
    CompactionRequest,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)


@dataclass(slots=True, unsafe_hash=True)  # not frozen: ~4x cheaper to build, one per request
class RaftStatus:
    committed_index: int
    applied_index: int
    term: int
    lead: int
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str  # "" for a member that has not started yet
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    id: int
    ttl_s: int  # remaining seconds, truncated (etcd: int64(Remaining().Seconds()))
    granted_ttl_s: int
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: int  # 1 NOSPACE, 2 CORRUPT


class Watcher(Protocol):
    """A store watcher (store.v3 MvccWatcher). The store appends (header revision, events)
    batches in revision order, sets `compacted` to the compaction revision when the watcher
    fell behind it (no batch follows then), and calls `wake()` after each change. The gateway
    replaces `wake` and must call `cancel()` exactly once when done."""

    id: int
    batches: deque[tuple[int, list[Event]]]
    compacted: int
    wake: Callable[[], None]

    def cancel(self) -> None: ...


class V3Backend(Protocol):
    @property
    def cluster_id(self) -> int: ...

    @property
    def member_id(self) -> int: ...

    def raft_status(self) -> RaftStatus: ...

    def v3_revision(self) -> int:
        """The store's current revision."""
        ...

    def v3_limits(self) -> tuple[int, int]:
        """(max_request_bytes, max_txn_ops) as configured."""
        ...

    def v3_stopping(self) -> asyncio.Event:
        """Set when the server shuts down: open streams end then."""
        ...

    # kv
    async def v3_range(self, req: RangeRequest) -> RangeResponse:
        """Linearizable unless req.serializable."""
        ...

    async def v3_put(self, req: PutRequest) -> PutResponse: ...

    def v3_read_ready(self) -> bool:
        """A linearizable read can be served now, without waiting (see v3_range_now)."""
        ...

    def v3_range_now(self, req: RangeRequest) -> RangeResponse | None:
        """v3_range when it needs no waiting (serializable, or a linearizable read this member
        can serve at once); None otherwise, and then the caller uses v3_range."""
        ...

    def v3_put_local(self, req: PutRequest, on_result: Callable[[Result | ServerError], None]) -> bool:
        """v3_put without a task, when this member leads and the quota allows it: True, and
        `on_result` gets the apply's result (a PutResponse or a V3Error) or a ServerError, once;
        False: use v3_put."""
        ...

    async def v3_delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse: ...

    async def v3_txn(self, req: TxnRequest) -> TxnResponse: ...

    async def v3_compact(self, req: CompactionRequest) -> int:
        """Returns the header revision (the current revision)."""
        ...

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
        """Register a watcher from start_revision (> 0). range_end b"" = single key,
        b"\\x00" = every key >= key. Never raises for a compacted start (see Watcher)."""
        ...

    # lease
    async def v3_lease_grant(self, lease_id: int, ttl_s: int) -> tuple[int, int, int]:
        """lease_id 0 = server-assigned. Returns (id, granted ttl, header revision)."""
        ...

    async def v3_lease_revoke(self, lease_id: int) -> int:
        """Returns the header revision."""
        ...

    async def v3_lease_renew(self, lease_id: int) -> int:
        """Keepalive: the granted TTL, or 0 for an unknown lease."""
        ...

    def v3_lease_ttl(self, lease_id: int, *, keys: bool) -> LeaseTTL | None: ...

    async def v3_lease_time_to_live(self, lease_id: int, *, keys: bool) -> LeaseTTL | None:
        """TimeToLive as the leader sees it (a follower asks the leader)."""
        ...

    def v3_leases(self) -> list[int]: ...

    # maintenance
    def v3_hash(self) -> int: ...

    def v3_db_size(self) -> tuple[int, int]:
        """(dbSize, dbSizeInUse)."""
        ...

    def v3_snapshot(self) -> bytes: ...

    def v3_alarms(self) -> list[Alarm]: ...

    async def v3_alarm(self, action: int, member_id: int, alarm: int) -> list[Alarm]: ...

    async def v3_move_leader(self, target_id: int) -> None: ...

    # cluster
    def v3_members(self) -> list[Member]: ...

    async def v3_member_add(self, peer_urls: list[str], is_learner: bool) -> Member:
        """Add a member through the log (a conf change). Raises GrpcError."""
        ...

    async def v3_member_remove(self, member_id: int) -> None: ...

    async def v3_member_update(self, member_id: int, peer_urls: list[str]) -> None:
        """Record new peer URLs for a member (through the log). Raises GrpcError."""
        ...

    async def v3_member_promote(self, member_id: int) -> None: ...

    def v3_is_learner(self) -> bool:
        """This member is a learner (it serves only status and serializable ranges)."""
        ...

    def leader_id(self) -> int: ...
