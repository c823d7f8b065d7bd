"""RawNode: the driver-facing API of the Raft core, and the Ready it hands out.

The driver loop is: feed tick()/step()/propose()/read_index(); when has_ready(),
take rd = ready(); persist rd.snapshot, rd.entries and rd.hard_state; then send
rd.messages; then apply rd.snapshot and rd.committed_entries (calling
apply_conf_change() for CONF_CHANGE entries); then advance(rd).  Modelled on
etcd-io/raft rawnode.go and node.go's Ready.

Invariants:
  * Between ready() and advance(rd) the driver must not call ready() again.
  * rd.committed_entries only contains entries that are persisted already or
    are in rd.entries (persisted before they are applied).
  * rd.messages may depend on rd.hard_state/rd.entries; they go out only after
    those are durable (Raft §5.1 "respond after persisting").

Must not import asyncio, time, os, or anything outside the standard library
and raft.core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from raft.core.confchange import ConfChange
from raft.core.config import Config
from raft.core.raft import Raft
from raft.core.tracker import ProgressState
from raft.core.types import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)

__all__ = ["Config", "ProgressStatus", "RawNode", "Ready", "Status"]

# Messages the core creates for itself; arriving from the network they are ignored
# (etcd ErrStepLocalMsg).  PROP is included because this core never forwards proposals.
_LOCAL_MSGS = frozenset(
    {MsgType.HUP, MsgType.BEAT, MsgType.PROP, MsgType.UNREACHABLE, MsgType.SNAP_STATUS, MsgType.CHECK_QUORUM}
)
_RESPONSE_MSGS = frozenset(
    {
        MsgType.APP_RESP,
        MsgType.VOTE_RESP,
        MsgType.HEARTBEAT_RESP,
        MsgType.UNREACHABLE,
        MsgType.PRE_VOTE_RESP,
    }
)


@dataclass(slots=True)
class Ready:
    """Everything the driver must do before the next advance().  See the module docstring for order.

    Never changed once made (not `frozen` only because that makes each one ~4x as costly)."""

    # Only when it changed since the last advance(); persist before sending messages.
    hard_state: HardState | None = None
    # Entries to persist (Storage.append semantics: a conflicting suffix is replaced).
    entries: tuple[Entry, ...] = ()
    # Entries to apply, in order; may include some of `entries` (persist first).
    committed_entries: tuple[Entry, ...] = ()
    # Messages to send once the above is durable.
    messages: tuple[Message, ...] = ()
    # A snapshot received from the leader: persist it, then restore the state machine from it.
    snapshot: Snapshot | None = None
    read_states: tuple[ReadState, ...] = ()
    # Only when it changed since the last ready().
    soft_state: SoftState | None = None
    # False if nothing in this Ready needs an fsync (no entries, no term/vote change).
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    lead: int
    state: StateType
    commit: int
    applied: int
    lead_transferee: int = NONE
    # Only on the leader: what it knows about each member's log.
    progress: Mapping[int, ProgressStatus] = field(default_factory=dict)


class RawNode:
    """A Raft node without I/O.  Not thread-safe; one driver owns it."""

    def __init__(self, cfg: Config) -> None:
        self._raft = Raft(cfg)
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()

    @property
    def raft(self) -> Raft:
        """The underlying state machine, for tests and debugging only."""
        return self._raft

    # -- inputs ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick (the driver decides how long a tick is)."""
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote first if configured), like etcd's MsgHup."""
        self._raft.step(Message(MsgType.HUP, frm=self._raft.id))

    def propose(self, data: bytes) -> None:
        """Append `data` as a NORMAL entry if this node is leader.

        Raises NotLeader(leader_hint) on a follower that knows the leader, and
        ProposalDropped when no leader is known or leadership is being transferred.
        Accepted is not committed: watch committed_entries for it.
        """
        self._propose(Entry(term=0, index=0, type=EntryType.NORMAL, data=data))

    def propose_many(self, datas: list[bytes]) -> None:
        """propose() for several entries at once: one step, one append (a group of writes)."""
        self._raft.step(
            Message(
                MsgType.PROP,
                frm=self._raft.id,
                entries=tuple([Entry(0, 0, EntryType.NORMAL, d) for d in datas]),
            )
        )

    def accepts_proposals(self) -> bool:
        """propose() would append here now: leader, still a member, not handing leadership over."""
        r = self._raft
        return r.state is StateType.LEADER and r.id in r.prs.progress and r.lead_transferee == NONE

    def propose_conf_change(self, data: bytes) -> None:
        """Append `data` as a CONF_CHANGE entry; the app decodes and applies it when committed.

        Raises ProposalDropped if an earlier conf change may not be applied yet
        (one at a time), plus the errors of propose().
        """
        self._propose(Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=data))

    def _propose(self, e: Entry) -> None:
        self._raft.step(Message(MsgType.PROP, frm=self._raft.id, entries=(e,)))

    def apply_conf_change(
        self,
        voters_add: tuple[int, ...] = (),
        voters_remove: tuple[int, ...] = (),
        learners_add: tuple[int, ...] = (),
    ) -> ConfState:
        """Make an applied conf change take effect; returns the new ConfState (save it with snapshots).

        Call it while applying the committed CONF_CHANGE entry, in log order.
        Raises ValueError for an invalid change (demoting a voter, id 0).
        """
        cc = ConfChange(
            voters_add=tuple(voters_add), voters_remove=tuple(voters_remove), learners_add=tuple(learners_add)
        )
        return self._raft.apply_conf_change(cc)

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer.  Local-only message types are ignored."""
        if msg.type in _LOCAL_MSGS:
            return
        if msg.type in _RESPONSE_MSGS and msg.frm not in self._raft.prs.progress:
            return  # a response from a node that is not (or no longer) a member
        self._raft.step(msg)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; answered as ReadState(index, ctx) in a later Ready.

        `ctx` must be non-empty and unique among outstanding requests.  Raises
        ProposalDropped when no leader is known.  A request may also be lost
        (leader change, dropped messages); the caller must time out and retry.
        """
        if not ctx:
            raise ValueError("read_index needs a non-empty ctx")
        self._raft.step(Message(MsgType.READ_INDEX, context=ctx))

    def transfer_leader(self, to: int) -> None:
        """Ask the leader to hand leadership to `to` (Raft thesis §3.10); best effort."""
        self._raft.step(Message(MsgType.TRANSFER_LEADER, frm=to))

    def report_unreachable(self, id: int) -> None:
        """The transport failed to deliver to `id`; the leader stops pipelining to it."""
        self._raft.step(Message(MsgType.UNREACHABLE, frm=id))

    def report_snapshot(self, id: int, failed: bool) -> None:
        """The transport finished sending a SNAP to `id` (or failed to)."""
        self._raft.step(Message(MsgType.SNAP_STATUS, frm=id, reject=failed))

    # -- outputs ------------------------------------------------------------------

    def has_ready(self) -> bool:
        # Field by field: building the HardState and SoftState to compare cost more than the
        # rest of this check, and it runs once or twice per batch of writes.
        r = self._raft
        ps = self._prev_soft
        if r.lead != ps.lead or r.state is not ps.raft_state:
            return True
        if self._hard_state_changed():
            return True
        log = r.log
        if log.unstable.snapshot is not None:
            return True
        if r.msgs or log.unstable.entries or log.has_next_ents():
            return True
        return bool(r.read_states)

    def _hard_state_changed(self) -> bool:
        """The HardState differs from the last one handed out, and is not the empty one."""
        r = self._raft
        ph = self._prev_hard
        term, vote, commit = r.term, r.vote, r.log.committed
        if term == ph.term and vote == ph.vote and commit == ph.commit:
            return False
        return bool(term or vote or commit)

    def ready(self) -> Ready:
        r = self._raft
        prev = self._prev_hard
        hs = r.hard_state() if self._hard_state_changed() else None
        ps = self._prev_soft
        ss = r.soft_state() if r.lead != ps.lead or r.state is not ps.raft_state else None
        log = r.log
        entries = tuple(log.unstable.entries)
        rd = Ready(
            hard_state=hs,
            entries=entries,
            committed_entries=tuple(log.next_ents()),
            messages=tuple(r.msgs),
            snapshot=log.unstable.snapshot,
            read_states=tuple(r.read_states),
            soft_state=ss,
            must_sync=bool(entries) or r.term != prev.term or r.vote != prev.vote,
        )
        if ss is not None:
            self._prev_soft = ss
        if r.msgs:
            r.msgs = []
        if r.read_states:
            r.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the core that `rd` was persisted, sent and applied."""
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        applied = 0
        if rd.committed_entries:
            applied = rd.committed_entries[-1].index
        elif rd.snapshot is not None:
            applied = rd.snapshot.meta.index
        self._raft.advance(
            applied_to=applied,
            stable=rd.entries[-1] if rd.entries else None,
            snapshot_index=rd.snapshot.meta.index if rd.snapshot is not None else 0,
        )

    @property
    def status(self) -> Status:
        r = self._raft
        progress: dict[int, ProgressStatus] = {}
        if r.state is StateType.LEADER:
            progress = {
                i: ProgressStatus(
                    match=p.match,
                    next=p.next,
                    state=p.state,
                    recent_active=p.recent_active,
                    is_learner=p.is_learner,
                )
                for i, p in r.prs.items()
            }
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            lead=r.lead,
            state=r.state,
            commit=r.log.committed,
            applied=r.log.applied,
            lead_transferee=r.lead_transferee,
            progress=progress,
        )
