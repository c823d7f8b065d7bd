"""The Raft state machine: terms, role transitions, elections, sending appends, membership, ticks.

A pure, synchronous object modelled on etcd-io/raft raft.go (the version in
etcd 3.4, plus the later fast log back-off and the pending ReadIndex queue).
Inputs are step() and tick(); outputs accumulate in `msgs` and `read_states`
and in the log's unstable part, and RawNode turns them into a Ready.  The
role-specific step functions live in leader.py and follower.py.

Invariants:
  * At most one vote per term (`vote` is persisted with `term` in HardState),
    and `term` never decreases (Raft §5.1, §5.2).
  * A leader never overwrites or deletes its own entries (Leader Append-Only, §5.3).
  * The commit index moves only forward, and a leader advances it only to an
    entry of its current term replicated on a majority (§5.4.2).
  * Given the same sequence of calls and the same cfg.rng, the outputs are the
    same: iteration over peers is in sorted id order, and randomness comes only
    from cfg.rng.

Must not import asyncio, time, os, or anything outside the standard library
and raft.core; must not call module-level random functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from raft.core.confchange import ConfChange, apply_change
from raft.core.config import Config
from raft.core.errors import Compacted, Unavailable
from raft.core.follower import step_candidate, step_follower
from raft.core.leader import expire_stalled_snapshots, step_leader
from raft.core.log import RaftLog
from raft.core.quorum import VoteResult
from raft.core.readonly import ReadOnly
from raft.core.tracker import ProgressState, ProgressTracker
from raft.core.types import (
    CAMPAIGN_TRANSFER,
    NONE,
    CampaignType,
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

_log = logging.getLogger("raft")

_VOTE_RESP = {MsgType.VOTE: MsgType.VOTE_RESP, MsgType.PRE_VOTE: MsgType.PRE_VOTE_RESP}
_CAMPAIGN_MSGS = frozenset({MsgType.VOTE, MsgType.VOTE_RESP, MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP})


class Raft:
    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.id = cfg.id
        self.log = RaftLog(cfg.storage)
        self.max_msg_size = cfg.max_size_per_msg
        self.prs = ProgressTracker(cfg.max_inflight_msgs)
        self.rng = cfg.rng
        self.election_timeout = cfg.election_ticks
        self.heartbeat_timeout = cfg.heartbeat_ticks
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote

        self.term = 0
        self.vote: int = NONE
        self.lead: int = NONE
        self.state = StateType.FOLLOWER
        self.lead_transferee: int = NONE
        # Index of the latest conf-change entry that may not be applied yet;
        # a new one is refused until log.applied reaches it (one at a time).
        self.pending_conf_index = 0
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        # ReadIndex requests that arrived before this leader committed an entry of
        # its term; answered once it has (Raft thesis §6.4 step 1).
        self.pending_read_index_messages: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self._step_fn: Callable[[Raft, Message], None] = step_follower
        self._tick_fn: Callable[[], None] = self._tick_election

        hs, cs = cfg.storage.initial_state()
        if not cs.voters and not cs.learners:
            cs = ConfState(voters=tuple(cfg.peers), learners=tuple(cfg.learners))
        self._reset_tracker(cs)
        if hs != HardState():
            self._load_state(hs)
        if cfg.applied > 0:
            if cfg.applied > self.log.committed:
                raise ValueError(f"applied({cfg.applied}) is beyond committed({self.log.committed})")
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)
        _log.info(
            "newRaft %x [peers: %s, term: %d, commit: %d, applied: %d, lastindex: %d, lastterm: %d]",
            self.id,
            sorted(self.prs.voters),
            self.term,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.log.last_term(),
        )

    # -- small helpers ---------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(lead=self.lead, raft_state=self.state)

    def promotable(self) -> bool:
        """Only a voter may campaign (learners and removed nodes never do)."""
        return self.id in self.prs.voters

    def _load_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise AssertionError(
                f"{self.id:x} state.commit {hs.commit} is out of range [{self.log.committed}, {self.log.last_index()}]"
            )
        # The driver may have persisted a snapshot newer than the saved commit;
        # the snapshot index is committed by definition, so keep the larger one.
        self.log.committed = max(self.log.committed, hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    def _reset_tracker(self, cs: ConfState) -> None:
        self.prs = ProgressTracker(self.prs.max_inflight)
        nxt = self.log.last_index() + 1
        for v in cs.voters:
            self.prs.init_progress(v, match=0, next=nxt, is_learner=False)
        for v in cs.learners:
            self.prs.init_progress(v, match=0, next=nxt, is_learner=True)
        if self.id in self.prs.progress:
            self.prs.progress[self.id].match = self.log.last_index()

    def send(self, m: Message) -> None:
        frm = m.frm if m.frm != NONE else self.id
        if m.type in _CAMPAIGN_MSGS:
            # The term of a (pre-)vote request is the term campaigned for, and a
            # granted response echoes it; both are set by the caller.
            if m.term == 0 and m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                raise AssertionError(f"term should be set when sending {m.type.name}")
            self.msgs.append(replace(m, frm=frm))
            return
        if m.term != 0:
            raise AssertionError(f"term should not be set when sending {m.type.name} (was {m.term})")
        # Forwarded READ_INDEX keeps term 0: it is treated as local by the leader.
        term = 0 if m.type in (MsgType.PROP, MsgType.READ_INDEX) else self.term
        self.msgs.append(replace(m, frm=frm, term=term))

    # -- sending appends and heartbeats ---------------------------------------------

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send to `to` the entries it lacks, or a snapshot if they are compacted.

        Returns True if a message was sent.  Respects flow control: nothing is
        sent to a paused Progress (probe outstanding, window full, snapshot in flight).
        """
        pr = self.prs.progress.get(to)
        if pr is None or pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            ents = self.log.entries(pr.next, self.max_msg_size)
        except (Compacted, Unavailable):
            # The entries the follower needs are compacted away: send a snapshot.
            return self.send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                MsgType.APP,
                to=to,
                index=prev,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        if ents:
            if pr.state is ProgressState.REPLICATE:
                # Pipelining: assume the APP will succeed and move on (etcd optimisticUpdate).
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last)
            elif pr.state is ProgressState.PROBE:
                pr.probe_sent = True
        return True

    def send_snapshot(self, to: int) -> bool:
        pr = self.prs.progress[to]
        if not pr.recent_active:
            # Don't ship a (possibly large) snapshot to a node that may be down.
            _log.debug("ignore sending snapshot to %x since it is not recently active", to)
            return False
        snap = self.log.snapshot()
        if snap.is_empty:
            raise AssertionError("need non-empty snapshot")
        _log.debug(
            "%x [firstindex: %d, commit: %d] sent snapshot[index: %d, term: %d] to %x [%r]",
            self.id,
            self.log.first_index(),
            self.log.committed,
            snap.meta.index,
            snap.meta.term,
            to,
            pr,
        )
        pr.become_snapshot(snap.meta.index)
        self.send(Message(MsgType.SNAP, to=to, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit past what it is known to hold: it may
        # not have those entries yet, or hold different ones (etcd sendHeartbeat).
        pr = self.prs.progress[to]
        commit = min(pr.match, self.log.committed)
        self.send(Message(MsgType.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for i in self.prs.ids():
            if i != self.id:
                self.send_append(i)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for i in self.prs.ids():
            if i != self.id:
                self.send_heartbeat(i, ctx)

    def maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.prs.committed(), self.term)

    def append_entry(self, ents: list[Entry]) -> None:
        li = self.log.last_index()
        term = self.term
        stamped = [Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        li = self.log.append(stamped)
        # The leader counts its own entries as soon as they are in its log; they
        # are persisted before the Ready's messages go out (Raft thesis §10.2.1).
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(li)
        self.maybe_commit()

    # -- role transitions ---------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.prs.reset_votes()
        last = self.log.last_index()
        for i, pr in self.prs.items():
            learner = pr.is_learner
            self.prs.init_progress(i, match=last if i == self.id else 0, next=last + 1, is_learner=learner)
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []

    def _reset_randomized_election_timeout(self) -> None:
        # Raft §5.2: randomized timeouts in [et, 2*et) make split votes rare.
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    def become_follower(self, term: int, lead: int) -> None:
        self._step_fn = step_follower
        self._reset(term)
        self._tick_fn = self._tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER
        _log.info("%x became follower at term %d", self.id, self.term)

    def become_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step_fn = step_candidate
        self._reset(self.term + 1)
        self._tick_fn = self._tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE
        _log.info("%x became candidate at term %d", self.id, self.term)

    def become_pre_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        # Thesis §9.6: a pre-candidate changes neither term nor vote, so a
        # failed pre-vote leaves the rest of the cluster undisturbed.
        self._step_fn = step_candidate
        self.prs.reset_votes()
        self._tick_fn = self._tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE
        _log.info("%x became pre-candidate at term %d", self.id, self.term)

    def become_leader(self) -> None:
        if self.state is StateType.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step_fn = step_leader
        self._reset(self.term)
        self._tick_fn = self._tick_heartbeat
        self.lead = self.id
        self.state = StateType.LEADER
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            # The leader trivially knows its own log.
            pr.become_replicate()
            pr.recent_active = True
        # There may be an unapplied conf change in the log; refuse new ones until
        # everything present now is applied (conservative, as etcd does).
        self.pending_conf_index = self.log.last_index()
        # Raft §5.4.2 / §8: commit an empty entry of the new term, so that entries
        # from earlier terms become committed and ReadIndex can be served.
        self.append_entry([Entry(term=0, index=0)])
        _log.info("%x became leader at term %d", self.id, self.term)

    # -- elections ----------------------------------------------------------------------

    def hup(self, t: CampaignType) -> None:
        if self.state is StateType.LEADER:
            _log.debug("%x ignoring MsgHup because already leader", self.id)
            return
        if not self.promotable():
            _log.warning("%x is unpromotable and can not campaign", self.id)
            return
        # A conf change that is committed but not applied may change who votes;
        # campaigning under the old configuration could elect two leaders.
        pending = sum(
            1
            for e in self.log.slice(self.log.applied + 1, self.log.committed + 1)
            if e.type is EntryType.CONF_CHANGE
        )
        if pending and self.log.committed > self.log.applied:
            _log.warning(
                "%x cannot campaign at term %d since there are still %d pending configuration changes to apply",
                self.id,
                self.term,
                pending,
            )
            return
        _log.info("%x is starting a new election at term %d", self.id, self.term)
        self.campaign(t)

    def campaign(self, t: CampaignType) -> None:
        if t is CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MsgType.PRE_VOTE
            # Pre-votes ask about the next term without moving to it.
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = MsgType.VOTE
            term = self.term
        if self.poll(self.id, _VOTE_RESP[vote_msg], True) is VoteResult.WON:
            # A single-voter cluster wins at once: its own vote is a majority.
            if t is CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if t is CampaignType.TRANSFER else b""
        for i in sorted(self.prs.voters):
            if i == self.id:
                continue
            _log.info(
                "%x [logterm: %d, index: %d] sent %s request to %x at term %d",
                self.id,
                self.log.last_term(),
                self.log.last_index(),
                vote_msg.name,
                i,
                self.term,
            )
            self.send(
                Message(
                    vote_msg,
                    to=i,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=ctx,
                )
            )

    def poll(self, id: int, t: MsgType, granted: bool) -> VoteResult:
        if granted:
            _log.info("%x received %s from %x at term %d", self.id, t.name, id, self.term)
        else:
            _log.info("%x received %s rejection from %x at term %d", self.id, t.name, id, self.term)
        self.prs.record_vote(id, granted)
        return self.prs.tally_votes()[2]

    # -- the step function ------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message.  Raises ProposalDropped/NotLeader only for local PROP/READ_INDEX."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Thesis §4.2.3: while we hear from a leader, a vote request is
                    # from a node that was cut off (or removed); ignoring it keeps
                    # it from deposing a healthy leader.
                    _log.info(
                        "%x [logterm: %d, index: %d, vote: %x] ignored %s from %x [logterm: %d, index: %d] "
                        "at term %d: lease is not expired (remaining ticks: %d)",
                        self.id,
                        self.log.last_term(),
                        self.log.last_index(),
                        self.vote,
                        m.type.name,
                        m.frm,
                        m.log_term,
                        m.index,
                        self.term,
                        self.election_timeout - self.election_elapsed,
                    )
                    return
            if m.type is MsgType.PRE_VOTE:
                pass  # never change our term in response to a pre-vote
            elif m.type is MsgType.PRE_VOTE_RESP and not m.reject:
                # The granted pre-vote carries the term we will campaign for;
                # the term moves once a quorum has granted it.
                pass
            else:
                _log.info(
                    "%x [term: %d] received a %s message with higher term from %x [term: %d]",
                    self.id,
                    self.term,
                    m.type.name,
                    m.frm,
                    m.term,
                )
                if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                    self.become_follower(m.term, m.frm)
                else:
                    self.become_follower(m.term, NONE)
        else:
            if m.term < self.term:
                if (self.check_quorum or self.pre_vote) and m.type in (MsgType.HEARTBEAT, MsgType.APP):
                    # A leader cut off by a partition may never see a higher term
                    # (pre-vote/lease stop others from bumping ours); tell it ours.
                    self.send(Message(MsgType.APP_RESP, to=m.frm))
                elif m.type is MsgType.PRE_VOTE:
                    # Answer, or the stale pre-candidate would wait for ever.
                    self.send(Message(MsgType.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
                else:
                    _log.debug(
                        "%x [term: %d] ignored a %s message with lower term from %x [term: %d]",
                        self.id,
                        self.term,
                        m.type.name,
                        m.frm,
                        m.term,
                    )
                return

        if m.type is MsgType.HUP:
            self.hup(CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step_fn(self, m)

    def _handle_vote_request(self, m: Message) -> None:
        # We can vote if this is a repeat of a vote we already cast, or we have
        # not voted and know no leader in this term, or it is a pre-vote for a
        # future term (Raft §5.2: one vote per term; thesis §9.6 for pre-vote).
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type is MsgType.PRE_VOTE and m.term > self.term)
        )
        resp = _VOTE_RESP[m.type]
        # Raft §5.4.1: grant only to a candidate whose log is at least as up-to-date.
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            _log.info(
                "%x [logterm: %d, index: %d, vote: %x] cast %s for %x [logterm: %d, index: %d] at term %d",
                self.id,
                self.log.last_term(),
                self.log.last_index(),
                self.vote,
                m.type.name,
                m.frm,
                m.log_term,
                m.index,
                self.term,
            )
            # The response carries the term of the request: for a pre-vote that is
            # a term we have not entered, which the candidate checks.
            self.send(Message(resp, to=m.frm, term=m.term))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            _log.info(
                "%x [logterm: %d, index: %d, vote: %x] rejected %s from %x [logterm: %d, index: %d] at term %d",
                self.id,
                self.log.last_term(),
                self.log.last_index(),
                self.vote,
                m.type.name,
                m.frm,
                m.log_term,
                m.index,
                self.term,
            )
            self.send(Message(resp, to=m.frm, term=self.term, reject=True))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # -- snapshots and membership --------------------------------------------------------

    def restore(self, s: Snapshot) -> bool:
        """Install snapshot `s` if it is news to us; True if the log was replaced."""
        if s.meta.index <= self.log.committed:
            return False
        if self.log.match_term(s.meta.index, s.meta.term):
            # We hold the snapshot's last entry already: just commit up to it.
            _log.info(
                "%x [commit: %d, lastindex: %d, lastterm: %d] fast-forwarded commit to snapshot [index: %d, term: %d]",
                self.id,
                self.log.committed,
                self.log.last_index(),
                self.log.last_term(),
                s.meta.index,
                s.meta.term,
            )
            self.log.commit_to(s.meta.index)
            return False
        self.log.restore(s)
        # A snapshot taken before we were added does not list us; we stay a
        # non-voting follower until the conf change that adds us is applied.
        self._reset_tracker(s.meta.conf_state)
        return True

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        cs = apply_change(self.prs.conf_state(), cc)
        self._switch_to_config(cs)
        return cs

    def _switch_to_config(self, cs: ConfState) -> None:
        keep = set(cs.voters) | set(cs.learners)
        for i in list(self.prs.progress):
            if i not in keep:
                self.prs.remove(i)
        last = self.log.last_index()
        for i, learner in [*((v, False) for v in cs.voters), *((v, True) for v in cs.learners)]:
            pr = self.prs.progress.get(i)
            if pr is None:
                # Probe new members from our last index.  Mark them active so that
                # CheckQuorum does not count them against us before they answer.
                self.prs.init_progress(i, match=0, next=max(last, 1), is_learner=learner)
                self.prs.progress[i].recent_active = True
            elif pr.is_learner != learner:
                pr.is_learner = learner
                (self.prs.learners if learner else self.prs.voters).add(i)
                (self.prs.voters if learner else self.prs.learners).discard(i)
        if self.state is not StateType.LEADER or not self.prs.voters:
            return
        if self.id not in self.prs.progress:
            # Removed leader: keep replicating until the app stops us, but accept no
            # proposals (see _leader_propose).
            return
        if self.maybe_commit():
            # A smaller quorum may commit more.
            self.bcast_append()
        else:
            for i in self.prs.ids():
                if i != self.id:
                    self.send_append(i, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.prs.voters:
            self.abort_leader_transfer()

    # -- ticks ----------------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick_fn()

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MsgType.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MsgType.CHECK_QUORUM, frm=self.id))
            if self.state is not StateType.LEADER:
                return
            expire_stalled_snapshots(self)
            # A transfer that did not finish within an election timeout is abandoned.
            if self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state is not StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MsgType.BEAT, frm=self.id))

    # -- driver feedback ---------------------------------------------------------------------

    def advance(self, applied_to: int, stable: Entry | None, snapshot_index: int) -> None:
        if applied_to > 0:
            self.log.applied_to(applied_to)
        if stable is not None:
            self.log.stable_to(stable.index, stable.term)
        if snapshot_index > 0:
            self.log.stable_snap_to(snapshot_index)
