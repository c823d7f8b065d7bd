"""The follower's and (pre-)candidate's step functions, and AppendEntries/heartbeat/snapshot handling.

Split out of raft.py by role (as etcd-io/raft's stepFollower/stepCandidate);
these functions operate on a Raft and are installed as its step function by
Raft.become_follower / become_candidate / become_pre_candidate.

Invariants:
  * A follower answers every APP, HEARTBEAT and SNAP from its leader, so the
    leader's flow control never waits for ever on a live follower.
  * Entries at or below the commit index are never truncated (log.maybe_append
    enforces it).

Must not import asyncio, time, os, or anything outside the standard library
and raft.core.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from raft.core.errors import NotLeader, ProposalDropped
from raft.core.quorum import VoteResult
from raft.core.types import NONE, CampaignType, Message, MsgType, ReadState, StateType

if TYPE_CHECKING:
    from raft.core.raft import Raft

_log = logging.getLogger("raft")


def step_candidate(r: Raft, m: Message) -> None:
    """Handle `m` as candidate or pre-candidate; raises ProposalDropped for local PROP/READ_INDEX."""
    # Only responses matching our campaign count: a VOTE_RESP seen while
    # pre-candidate (or the reverse) is from an earlier campaign.
    my_vote_resp = MsgType.PRE_VOTE_RESP if r.state is StateType.PRE_CANDIDATE else MsgType.VOTE_RESP
    t = m.type
    if t is MsgType.PROP:
        raise ProposalDropped(f"{r.id:x} no leader at term {r.term}; dropping proposal")
    if t is MsgType.READ_INDEX:
        if m.frm == NONE:  # local only: see step_follower
            raise ProposalDropped(f"{r.id:x} no leader at term {r.term}; dropping index reading msg")
        return
    if t is MsgType.APP:
        # A leader of our term exists (Raft §5.2: candidate recognises it).
        r.become_follower(m.term, m.frm)
        _handle_append_entries(r, m)
    elif t is MsgType.HEARTBEAT:
        r.become_follower(m.term, m.frm)
        _handle_heartbeat(r, m)
    elif t is MsgType.SNAP:
        r.become_follower(m.term, m.frm)
        _handle_snapshot(r, m)
    elif t is my_vote_resp:
        result = r.poll(m.frm, m.type, not m.reject)
        granted, rejected, _ = r.prs.tally_votes()
        _log.info("%x has received %d %s votes and %d vote rejections", r.id, granted, m.type.name, rejected)
        if result is VoteResult.WON:
            if r.state is StateType.PRE_CANDIDATE:
                r.campaign(CampaignType.ELECTION)
            else:
                r.become_leader()
                r.bcast_append()
        elif result is VoteResult.LOST:
            # A pre-candidate that loses returns to its term (unchanged) as follower.
            r.become_follower(r.term, NONE)
    elif t is MsgType.TIMEOUT_NOW:
        _log.debug(
            "%x [term %d state %s] ignored MsgTimeoutNow from %x",
            r.id,
            r.term,
            r.state.name,
            m.frm,
        )


def step_follower(r: Raft, m: Message) -> None:
    """Handle `m` as follower; raises NotLeader/ProposalDropped for a local PROP (never forwarded)."""
    t = m.type
    if t is MsgType.PROP:
        # Proposals are not forwarded: the caller retries at the leader.
        if r.lead == NONE:
            raise ProposalDropped(f"{r.id:x} no leader at term {r.term}; dropping proposal")
        raise NotLeader(r.lead)
    if t is MsgType.APP:
        r.election_elapsed = 0
        r.lead = m.frm
        _handle_append_entries(r, m)
    elif t is MsgType.HEARTBEAT:
        r.election_elapsed = 0
        r.lead = m.frm
        _handle_heartbeat(r, m)
    elif t is MsgType.SNAP:
        r.election_elapsed = 0
        r.lead = m.frm
        _handle_snapshot(r, m)
    elif t is MsgType.TRANSFER_LEADER:
        if r.lead == NONE:
            _log.info("%x no leader at term %d; dropping leader transfer msg", r.id, r.term)
            return
        r.send(replace(m, to=r.lead, term=0))
    elif t is MsgType.TIMEOUT_NOW:
        if r.promotable():
            _log.info(
                "%x [term %d] received MsgTimeoutNow from %x and starts an election to get leadership.",
                r.id,
                r.term,
                m.frm,
            )
            # Transfers skip pre-vote: the leader asked, so no partition is suspected.
            r.hup(CampaignType.TRANSFER)
        else:
            _log.info("%x received MsgTimeoutNow from %x but is not promotable", r.id, m.frm)
    elif t is MsgType.READ_INDEX:
        if r.lead == NONE:
            # Only RawNode.read_index sends without a sender.  Our own request can also come
            # back from the network (forwarded to a leader that stepped down and forwarded it
            # to us); raising then would throw out of RawNode.step.  Drop it: the caller retries.
            if m.frm == NONE:
                raise ProposalDropped(f"{r.id:x} no leader at term {r.term}; dropping index reading msg")
            return
        r.send(replace(m, to=r.lead, term=0))
    elif t is MsgType.READ_INDEX_RESP:
        r.read_states.append(ReadState(index=m.index, ctx=m.context))


def _handle_append_entries(r: Raft, m: Message) -> None:
    if m.index < r.log.committed:
        # Everything up to our commit is already known to match (§5.3 Log Matching).
        r.send(Message(MsgType.APP_RESP, to=m.frm, index=r.log.committed))
        return
    last_new = r.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last_new is not None:
        r.send(Message(MsgType.APP_RESP, to=m.frm, index=last_new))
        return
    # Rejected: give the leader our best guess of where the logs may agree.
    hint_index = min(m.index, r.log.last_index())
    hint_index, hint_term = r.log.find_conflict_by_term(hint_index, m.log_term)
    _log.debug(
        "%x [logterm: %d, index: %d] rejected MsgApp [logterm: %d, index: %d] from %x",
        r.id,
        r.log.term_or_zero(m.index),
        m.index,
        m.log_term,
        m.index,
        m.frm,
    )
    r.send(
        Message(
            MsgType.APP_RESP,
            to=m.frm,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )
    )


def _handle_heartbeat(r: Raft, m: Message) -> None:
    r.log.commit_to(m.commit)
    r.send(Message(MsgType.HEARTBEAT_RESP, to=m.frm, context=m.context))


def _handle_snapshot(r: Raft, m: Message) -> None:
    snap = m.snapshot
    if snap is None:
        return
    if r.restore(snap):
        _log.info(
            "%x [commit: %d] restored snapshot [index: %d, term: %d]",
            r.id,
            r.log.committed,
            snap.meta.index,
            snap.meta.term,
        )
        r.send(Message(MsgType.APP_RESP, to=m.frm, index=r.log.last_index()))
    else:
        _log.info(
            "%x [commit: %d] ignored snapshot [index: %d, term: %d]",
            r.id,
            r.log.committed,
            snap.meta.index,
            snap.meta.term,
        )
        r.send(Message(MsgType.APP_RESP, to=m.frm, index=r.log.committed))
