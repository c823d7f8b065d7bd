"""The asyncio driver of the Raft core: ticks, Ready handling, WAL, snapshots.

Invariants:
- one task owns the RawNode's Ready cycle: persist (WAL append + fsync) →
  send → apply in log order → advance. Nothing is applied (and so nothing is acknowledged)
  before the fsync that made it durable has returned;
- group commit: proposals made while an fsync is running pile up in the core's unstable log
  and share the next fsync. The fsync runs in a worker thread, so the loop goes on taking
  requests, except for writes arriving one at a time, where the hand-off would cost more than
  the fsync itself (see _persist);
- the WAL is touched only by that task, so append/sync/release never overlap.
Must not import store, starlette, httpx, v2api, v3gateway or app.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from raft.core.rawnode import Config, RawNode, Ready
from raft.core.storage import MemoryStorage
from raft.core.types import ConfState, Entry, EntryType, HardState, Message, Snapshot, SnapshotMeta, StateType
from raft.forksnap import ForkedSnapshot, SnapshotSource, can_fork, joined
from raft.snapshotter import Snapshotter
from raft.syncer import SyncHelper
from raft.wal import WAL

log = logging.getLogger("etcdpy.raft")

# etcd keeps this many entries in memory after a snapshot so slow followers can catch up
# without a snapshot (etcdserver snapshotCatchUpEntries).
CATCH_UP_ENTRIES = 5000
COMPACT_STEP = 8192  # log entries dropped per loop turn after a snapshot (~2-3 ms of deallocation)
# A ReadIndex request (or its answer) may be lost on a leader change or a dropped message;
# ask again after this long (etcd readIndexRetryTime is 500 ms).
READ_INDEX_RETRY_S = 0.5
# While no leader is known, look again this often.
NO_LEADER_RETRY_S = 0.02


# A lone write's fsync runs on the event loop (see RaftNode._persist) only while fsyncs take less
# than this on average: the loop answers nothing else meanwhile.
INLINE_SYNC_MAX_S = 0.002


def _encode(taken: Callable[[], bytes | Iterable[bytes | memoryview]]) -> bytes:
    return joined(taken())


def _timed_sync(wal: WAL) -> float:
    start = time.perf_counter()
    wal.sync()
    return time.perf_counter() - start


class Transport(Protocol):
    """Sends messages to peers (STYLE §4 seam).

    Contract (app.peers.PeerTransport implements it over HTTP): send() never blocks and never
    raises; it may drop messages (Raft tolerates loss, duplication and reordering). It is called
    only after everything the messages depend on is durable. Delivery failures come back to the
    node as RaftNode.report_unreachable / report_snapshot.
    """

    def send(self, messages: Sequence[Message]) -> None: ...


class NoTransport:
    """The transport of a single member: it has no peers, so there is nothing to send."""

    def send(self, messages: Sequence[Message]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class NodeOptions:
    node_id: int
    peers: tuple[int, ...]
    wal_dir: Path
    snap_dir: Path
    heartbeat_interval_s: float = 0.1
    election_ticks: int = 10
    fsync: bool = True
    snapshot_count: int = 100_000
    max_snapshots: int = 5
    max_wals: int = 5
    # CONF_CHANGE payloads written as the first entries (term 1, committed) of a fresh log:
    # etcd bootstraps a new cluster with one member-add per initial member.
    bootstrap: tuple[bytes, ...] = ()
    # Entries kept behind each snapshot (etcd --experimental-snapshot-catchup-entries, 3.5.14+).
    catch_up_entries: int = CATCH_UP_ENTRIES
    # Save snapshots from a forked child (raft/forksnap.py) where the platform can fork.
    fork_snapshots: bool = True


class RaftNode:
    def __init__(
        self,
        opts: NodeOptions,
        *,
        apply: Callable[[Entry], None],
        take_snapshot: SnapshotSource,
        restore: Callable[[bytes], None],
        transport: Transport | None = None,
        on_leader_change: Callable[[int], None] | None = None,
    ) -> None:
        self.opts = opts
        self._apply = apply
        self._take_snapshot = take_snapshot
        self._restore = restore
        self._transport: Transport = transport or NoTransport()
        self._on_leader_change = on_leader_change
        self._wake = asyncio.Event()
        self._batch: list[bytes] | None = None  # proposals accepted, not yet stepped (see propose)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.storage = MemoryStorage()
        self.committed_index = 0
        self.applied_index = 0
        self.applied_term = 0  # term of the last applied entry: == term once a leader caught up
        self.term = 0
        self.lead = 0
        self.state = StateType.FOLLOWER
        self._snap_index = 0
        self._conf_state = ConfState(voters=opts.peers)
        self.failure: BaseException | None = None
        self._wal: WAL | None = None
        self._snapshotter: Snapshotter | None = None
        self._rn: RawNode | None = None
        # ReadIndex: outstanding requests by ctx, answered from Ready.read_states.
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self._read_ctx_prefix = struct.pack(">QQ", opts.node_id, time.time_ns())
        self._read_seq = itertools.count(1)
        # (index, seq, future): resolved once applied_index >= index
        self._apply_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._apply_seq = itertools.count()
        self._campaign_when_applied = False
        self._entries_per_sync = 1.0  # moving average of the entries each fsync made durable
        self._sync_s = 0.0  # an fsync's duration: the last slow one, decaying
        self._sync_helper = SyncHelper()
        self._snap_job: ForkedSnapshot | None = None  # a forked child saving a snapshot
        self._snap_task: asyncio.Task[SnapshotMeta] | None = None  # the snapshot it saved

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Load the newest snapshot and replay the WAL (blocking; call before serving)."""
        opts = self.opts
        self._snapshotter = Snapshotter(opts.snap_dir, max_snapshots=opts.max_snapshots)
        wal, state = WAL.open(
            opts.wal_dir,
            fsync=opts.fsync,
            max_wals=opts.max_wals,
            preallocate=True,
            skip_through=self._snapshotter.newest_index(),
        )
        self._wal = wal
        if state.torn_tail_truncated:
            log.warning("WAL had a torn last record (crash during a write); it was truncated")
        applied = 0
        restored = False  # a data dir made by app.restore: a snapshot that names no voters
        if state.snapshot is not None:
            snap = self._snapshotter.load_newest(max_index=state.snapshot.index)
            if snap is None or snap.meta.index != state.snapshot.index:
                raise RuntimeError(
                    f"{opts.snap_dir}: the WAL records a snapshot at index {state.snapshot.index} "
                    "but no valid snapshot file with that index exists"
                )
            if not snap.meta.conf_state.voters:
                # this member's flags name the voters (and its bootstrap entries record them)
                restored = True
                meta = SnapshotMeta(snap.meta.index, snap.meta.term, ConfState(voters=opts.peers))
                snap = Snapshot(meta=meta, data=snap.data)
            self.storage.apply_snapshot(snap)
            self._restore(snap.data)
            applied = snap.meta.index
            self.applied_term = snap.meta.term
            self._snap_index = applied
            self._conf_state = snap.meta.conf_state
        if state.entries:
            self.storage.append(state.entries)
        hard_state = state.hard_state
        fresh = state.snapshot is None and not state.entries and hard_state == HardState()
        if (fresh or (restored and not state.entries)) and opts.bootstrap:
            # The first leader is then elected at term 2, as in etcd.
            term = max(1, hard_state.term)
            boot = [
                Entry(term=term, index=applied + i, type=EntryType.CONF_CHANGE, data=d)
                for i, d in enumerate(opts.bootstrap, start=1)
            ]
            hard_state = HardState(term=term, vote=hard_state.vote, commit=applied + len(boot))
            wal.append(boot, hard_state)
            wal.sync()
            self.storage.append(boot)
        self.storage.set_hard_state(hard_state)
        self.applied_index = applied
        self.committed_index = max(applied, hard_state.commit)
        self.term = hard_state.term
        self._rn = RawNode(
            Config(
                id=opts.node_id,
                peers=opts.peers,
                storage=self.storage,
                rng=random.Random(),
                election_ticks=opts.election_ticks,
                heartbeat_ticks=1,
                applied=applied,
                pre_vote=True,
                check_quorum=True,
            )
        )

    def start(self) -> None:
        assert self._rn is not None, "open() first"
        # A one-member cluster need not wait out an election timeout: it campaigns once the
        # committed log (conf changes included) is applied. With more members the randomized
        # election timeout starts the first election (Raft §5.2), as in etcd.
        self._campaign_when_applied = self.opts.peers == (self.opts.node_id,)
        self._wake.set()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker())]

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fail_read_waiters()
        snap_task = self._snap_task
        self._cancel_snapshot_job()
        if snap_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await snap_task
        self._sync_helper.close()
        if self._wal is not None:
            self._wal.close()
            self._wal = None

    # ---- inputs ----------------------------------------------------------------------------

    def propose(self, data: bytes) -> None:
        """Append a proposal (raises NotLeader / ProposalDropped from the core).

        On a leader that accepts proposals, they gather in a batch that enters the core as one
        step (one append) before anything else reaches it: the loop's next turn, an incoming
        message, a tick or another call flushes it first, so the order is what the calls made.
        """
        self._check_running()
        rn = self._rn
        assert rn is not None
        batch = self._batch
        if batch is not None:
            batch.append(data)
            return
        if rn.accepts_proposals():
            self._batch = [data]
            self._wake.set()
            return
        rn.propose(data)
        self._wake.set()

    def _flush(self) -> None:
        """Step the gathered proposals; nothing has reached the core since they were accepted,
        so it still accepts them."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        assert self._rn is not None
        self._rn.propose_many(batch)

    def propose_conf_change(self, data: bytes) -> None:
        """Append a CONF_CHANGE entry; ProposalDropped while an earlier one is not applied."""
        self._check_running()
        assert self._rn is not None
        self._flush()
        self._rn.propose_conf_change(data)
        self._wake.set()

    def apply_conf_change(
        self,
        *,
        voters_add: tuple[int, ...] = (),
        voters_remove: tuple[int, ...] = (),
        learners_add: tuple[int, ...] = (),
    ) -> ConfState:
        """Make a committed conf change take effect; call only from the apply callback."""
        assert self._rn is not None
        self._flush()  # proposals made before this change enter the log under the old config
        self._conf_state = self._rn.apply_conf_change(voters_add, voters_remove, learners_add)
        return self._conf_state

    @property
    def conf_state(self) -> ConfState:
        return self._conf_state

    def transfer_leadership(self, to: int) -> None:
        """Ask the core to hand leadership to `to` (the leader only; best effort)."""
        self._check_running()
        assert self._rn is not None
        self._flush()
        self._rn.transfer_leader(to)
        self._wake.set()

    def progress(self) -> dict[int, int]:
        """On the leader: each member's match index (empty elsewhere)."""
        if self._rn is None:
            return {}
        return {i: p.match for i, p in self._rn.status.progress.items()}

    async def snapshot_data(self, meta: SnapshotMeta) -> bytes:
        """The data of the snapshot `meta` describes, for a follower that needs it: held in
        memory, or read back from its file (a forked child's snapshot stays on disk).
        OSError or ValueError when that file is gone or unusable (a newer snapshot replaced it;
        the core then sends that one)."""
        held = self.storage.snapshot()
        if held.data and (held.meta.index, held.meta.term) == (meta.index, meta.term):
            return held.data
        snapshotter = self._snapshotter
        if snapshotter is None:
            raise ValueError("the node is not open")
        snap = await asyncio.to_thread(snapshotter.load, snapshotter.path_for(meta))
        if (snap.meta.index, snap.meta.term) != (meta.index, meta.term):
            raise ValueError(f"snapshot file for index {meta.index} holds {snap.meta.index}/{snap.meta.term}")
        return snap.data

    async def read_index(self, timeout_s: float) -> int:
        """A linearizable read point (Raft thesis §6.4): returns once it is applied here.

        Asks the core for a ReadIndex under a ctx unique to this member and process; the
        leader answers it (a follower's core forwards READ_INDEX to the leader and hands the
        READ_INDEX_RESP back as a ReadState). A request may be lost (leader change, dropped
        message), so it is asked again every READ_INDEX_RETRY_S under the same ctx; while no
        leader is known it waits. Then waits until applied_index reaches the read index.
        Raises Stopped when the node stops or fails, TimeoutError after `timeout_s`.
        """
        from raft.core.errors import NotLeader, ProposalDropped

        deadline = time.monotonic() + timeout_s
        ctx = self._read_ctx_prefix + struct.pack(">Q", next(self._read_seq))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters[ctx] = fut
        try:
            while True:
                self._check_running()
                assert self._rn is not None
                wait_s = READ_INDEX_RETRY_S
                try:
                    self._flush()
                    self._rn.read_index(ctx)
                    self._wake.set()
                except (ProposalDropped, NotLeader):
                    wait_s = NO_LEADER_RETRY_S  # no leader known yet: look again soon
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                with contextlib.suppress(TimeoutError):
                    index = await asyncio.wait_for(asyncio.shield(fut), min(wait_s, remaining))
                    break
        finally:
            self._read_waiters.pop(ctx, None)
        await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
        return index

    async def wait_applied(self, index: int, timeout_s: float) -> None:
        """Until applied_index >= index; raises Stopped or TimeoutError."""
        if self.applied_index >= index:
            return
        self._check_running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._apply_waiters, (index, next(self._apply_seq), fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        finally:
            if not fut.done():
                fut.cancel()  # dropped from the heap when its index is reached

    def _check_running(self) -> None:
        if self.failure is not None or self._rn is None or self._stopped:
            from raft.core.errors import Stopped

            raise Stopped()

    def _fail_read_waiters(self) -> None:
        from raft.core.errors import Stopped

        for f in self._read_waiters.values():
            if not f.done():
                f.set_exception(Stopped())
        for _, _, af in self._apply_waiters:
            if not af.done():
                af.set_exception(Stopped())
        self._apply_waiters.clear()

    def _resolve_read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            f = self._read_waiters.get(rs.ctx)
            if f is not None and not f.done():
                f.set_result(rs.index)

    def _resolve_apply_waiters(self) -> None:
        w = self._apply_waiters
        while w and w[0][0] <= self.applied_index:
            _, _, f = heapq.heappop(w)
            if not f.done():
                f.set_result(None)

    def step(self, msg: Message) -> None:
        """Feed a message from a peer. Dropped (as the network might) once stopped or failed."""
        if self._rn is None or self._stopped or self.failure is not None:
            return
        self._flush()
        self._rn.step(msg)
        self._wake.set()

    def report_unreachable(self, node_id: int) -> None:
        """The transport could not deliver to `node_id` (etcd ReportUnreachable)."""
        if self._rn is None or self._stopped or self.failure is not None:
            return
        self._flush()
        self._rn.report_unreachable(node_id)
        self._wake.set()

    def report_snapshot(self, node_id: int, *, failed: bool) -> None:
        """The transport finished (or failed) sending a SNAP to `node_id` (etcd ReportSnapshot)."""
        if self._rn is None or self._stopped or self.failure is not None:
            return
        self._flush()
        self._rn.report_snapshot(node_id, failed)
        self._wake.set()

    @property
    def leader_caught_up(self) -> bool:
        """Leader, and its own first entry of this term is applied, so is everything before it.

        Raft §5.4.2/§8: a new leader knows what is committed only once an entry of its term
        commits; until then its state machine may lag writes an earlier leader made.
        """
        return self.state is StateType.LEADER and self.applied_term == self.term

    # ---- the loop --------------------------------------------------------------------------

    async def _ticker(self) -> None:
        assert self._rn is not None
        while not self._stopped:
            await asyncio.sleep(self.opts.heartbeat_interval_s)
            self._flush()
            self._rn.tick()
            self._wake.set()

    async def _run(self) -> None:
        rn = self._rn
        assert rn is not None
        try:
            while not self._stopped:
                if self._campaign_when_applied and self.applied_index >= self.committed_index:
                    self._campaign_when_applied = False
                    if rn.raft.prs.voters == {self.opts.node_id}:
                        self._flush()
                        rn.campaign()
                self._flush()
                if self._snap_task is not None and self._snap_task.done():
                    await self._finish_snapshot()  # the child is done (its task woke this loop)
                if not rn.has_ready():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                rd = rn.ready()
                await self._persist(rd)
                if rd.messages:
                    self._transport.send(rd.messages)
                self._observe(rd)
                self._resolve_read_states(rd)
                if rd.snapshot is not None:
                    # A snapshot from the leader replaces the whole state machine.
                    self._restore(rd.snapshot.data)
                    self.applied_index = rd.snapshot.meta.index
                    self.applied_term = rd.snapshot.meta.term
                    self._snap_index = rd.snapshot.meta.index
                    if rd.snapshot.meta.conf_state.voters:
                        self._conf_state = rd.snapshot.meta.conf_state
                for entry in rd.committed_entries:
                    self._apply(entry)
                    self.applied_index = entry.index
                    self.applied_term = entry.term
                rn.advance(rd)
                self._resolve_apply_waiters()
                if self._snap_task is None and self.applied_index - self._snap_index >= self.opts.snapshot_count:
                    await self._snapshot()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or apply: stop serving writes, loudly
            self.failure = exc
            self._fail_read_waiters()
            log.critical("raft loop stopped: %r", exc, exc_info=exc)
            raise

    def _observe(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.committed_index = max(self.committed_index, rd.hard_state.commit)
        if rd.soft_state is not None:
            self.state = rd.soft_state.raft_state
            if rd.soft_state.lead != self.lead:
                self.lead = rd.soft_state.lead
                if self._on_leader_change is not None:
                    self._on_leader_change(self.lead)

    async def _persist(self, rd: Ready) -> None:
        wal = self._wal
        assert wal is not None and self._snapshotter is not None
        if rd.snapshot is not None:
            self._cancel_snapshot_job()  # the leader's is newer; both must not write the dir
            await asyncio.to_thread(self._snapshotter.save, rd.snapshot)
            wal.save_snapshot(rd.snapshot.meta)
            self.storage.apply_snapshot(rd.snapshot)
        if rd.entries or rd.hard_state is not None or rd.snapshot is not None:
            wal.append(rd.entries, rd.hard_state)
            if rd.must_sync or rd.snapshot is not None:
                # Writes one at a time (a lone client) are latency-bound: there the fsync runs
                # on the loop, since handing it off and back costs more than the fsync (two
                # wake-ups across threads or processes, ~190 us of wall time per write here).
                # Once writes overlap, the loop keeps taking requests while the helper process
                # syncs. Only while fsyncs are quick: a slow disk must not stall reads and
                # heartbeats.
                self._entries_per_sync += (len(rd.entries) - self._entries_per_sync) * 0.25
                lone = self._entries_per_sync < 1.5 and len(rd.entries) <= 1
                if lone and rd.snapshot is None and self._sync_s < INLINE_SYNC_MAX_S:
                    took = _timed_sync(wal)
                else:
                    took = await self._sync_elsewhere(wal)
                # Up at once, down slowly: one slow fsync is enough to leave the loop.
                self._sync_s = took if took > self._sync_s else self._sync_s + (took - self._sync_s) * 0.25
        if rd.entries:
            self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)

    async def _sync_elsewhere(self, wal: WAL) -> float:
        """fdatasync off the event loop, in the helper process (raft/syncer.py)."""
        target = wal.sync_target()
        if target is None:
            return 0.0
        try:
            took = await self._sync_helper.sync(*target)
        except OSError as exc:
            wal.synced(exc)  # raises: the raft loop stops, as after a failed fsync in place
            raise
        wal.synced(None)
        return took

    async def _snapshot(self) -> None:
        """Snapshot the applied state: in a forked child (raft/forksnap.py) that saves it while
        this process goes on, finished later by _finish_snapshot; else here, awaited."""
        wal = self._wal
        assert wal is not None and self._snapshotter is not None
        index = self.applied_index
        meta = SnapshotMeta(index=index, term=self.storage.term(index), conf_state=self._conf_state)
        if self.opts.fork_snapshots and can_fork():
            try:
                job = ForkedSnapshot.start(self._snapshotter, meta, self._take_snapshot)
            except OSError as exc:  # no memory or processes left for a fork: save it here
                log.warning("could not fork to save the snapshot (%s); saving it in-process", exc)
            else:
                self._snap_job = job
                self._snap_task = asyncio.get_running_loop().create_task(job.result())
                self._snap_task.add_done_callback(lambda _: self._wake.set())
                return
        taken = self._take_snapshot()  # taken now, on the loop: consistent with `index`
        # The encoding may go to a thread: what was taken shares nothing mutable with the state.
        data = taken if isinstance(taken, bytes) else await asyncio.to_thread(_encode, taken)
        await asyncio.to_thread(self._snapshotter.save, Snapshot(meta=meta, data=data))
        await self._snapshot_saved(meta, data)

    async def _finish_snapshot(self) -> None:
        """The forked child is done: record its snapshot (or fail, as a save here would)."""
        task, self._snap_task, self._snap_job = self._snap_task, None, None
        assert task is not None
        meta = task.result()
        if meta.index <= self._snap_index:
            return  # (a leader's snapshot cancels the job first; kept as a guard)
        # Its data stays on disk (b"" in the storage): snapshot_data() reads it for a follower.
        await self._snapshot_saved(meta, b"")

    def _cancel_snapshot_job(self) -> None:
        task, job, self._snap_task, self._snap_job = self._snap_task, self._snap_job, None, None
        if job is not None:
            job.kill()
        if task is not None:
            task.cancel()

    async def _snapshot_saved(self, meta: SnapshotMeta, data: bytes) -> None:
        """A snapshot file is durable: mark it in the WAL, then drop the log entries and WAL
        segments it covers."""
        wal = self._wal
        assert wal is not None
        index = meta.index
        wal.save_snapshot(meta)
        await asyncio.to_thread(wal.sync)
        self.storage.create_snapshot(index, meta.conf_state, data)
        # Keep catch_up_entries behind the snapshot for slow followers, unless the log already
        # starts later: after installing a leader's snapshot it begins at that snapshot (etcd
        # likewise ignores ErrCompacted here).
        compact_to = index - self.opts.catch_up_entries
        # In steps, with the loop free in between: dropping ~100k entries at once took ~30 ms
        # (their deallocation), a stall for every request in flight.
        while compact_to >= self.storage.first_index():
            self.storage.compact(min(compact_to, self.storage.first_index() + COMPACT_STEP))
            await asyncio.sleep(0)
        await asyncio.to_thread(wal.release_before, index)
        self._snap_index = index
        log.info("saved snapshot at index %d", index)
