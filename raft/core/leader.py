"""The leader's step function: replication responses, CheckQuorum, proposals, ReadIndex, transfer.

Split out of raft.py by role (as etcd-io/raft's stepLeader); these functions
operate on a Raft and are installed as its step function by Raft.become_leader.

Invariants:
  * The leader only counts acknowledgements from members of the current
    configuration, and only for its own term (stale responses are filtered by
    Raft.step before they get here).
  * A ReadIndex request is answered only after an entry of the leader's term is
    committed and a quorum has acknowledged a heartbeat sent after the request
    (Raft thesis §6.4).

Must not import asyncio, time, os, or anything outside the standard library
and raft.core.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raft.core.errors import ProposalDropped
from raft.core.quorum import VoteResult, vote_result
from raft.core.tracker import ProgressState
from raft.core.types import NONE, EntryType, Message, MsgType, ReadState

if TYPE_CHECKING:
    from raft.core.raft import Raft

_log = logging.getLogger("raft")


def step_leader(r: Raft, m: Message) -> None:
    """Handle `m` as leader (its term already checked by Raft.step).

    Raises ProposalDropped for a local PROP or READ_INDEX that cannot be served.
    """
    t = m.type
    if t is MsgType.BEAT:
        r.bcast_heartbeat()
        return
    if t is MsgType.CHECK_QUORUM:
        check_quorum(r)
        return
    if t is MsgType.PROP:
        _propose(r, m)
        return
    if t is MsgType.READ_INDEX:
        _read_index(r, m)
        return

    pr = r.prs.progress.get(m.frm)
    if pr is None:
        _log.debug("%x no progress available for %x", r.id, m.frm)
        return
    if t is MsgType.APP_RESP:
        pr.recent_active = True
        if m.reject:
            _log.debug(
                "%x received MsgAppResp(rejected, hint: (index %d, term %d)) from %x for index %d",
                r.id,
                m.reject_hint,
                m.log_term,
                m.frm,
                m.index,
            )
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term exceeds the follower's
                # term at reject_hint: none of them can match.
                next_probe = r.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                r.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if pr.maybe_update(m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                _log.debug(
                    "%x recovered from needing snapshot, resumed sending replication messages to %x",
                    r.id,
                    m.frm,
                )
                pr.become_probe()
                pr.become_replicate()
            elif pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            if r.maybe_commit():
                _release_pending_read_index_messages(r)
                r.bcast_append()
            elif old_paused:
                # The update unpaused it; send what it is missing now rather
                # than at the next heartbeat.
                r.send_append(m.frm)
            # The window may allow several size-limited APPs at once
            # (e.g. after probe -> replicate); keep sending until paused.
            while r.send_append(m.frm, send_if_empty=False):
                pass
            if m.frm == r.lead_transferee and pr.match == r.log.last_index():
                _log.info("%x sent MsgTimeoutNow to %x after received MsgAppResp", r.id, m.frm)
                r.send(Message(MsgType.TIMEOUT_NOW, to=m.frm))
        return
    if t is MsgType.HEARTBEAT_RESP:
        pr.recent_active = True
        pr.probe_sent = False
        # A full window may mean the APPs were lost; free one so progress resumes.
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()
        if pr.match < r.log.last_index():
            r.send_append(m.frm)
        if not m.context:
            return
        acks = r.read_only.recv_ack(m.frm, m.context)
        if acks is None or vote_result(r.prs.voters, acks) is not VoteResult.WON:
            return
        for rs in r.read_only.advance(m.context):
            _respond_to_read_index_req(r, rs.req, rs.index)
        return
    if t is MsgType.SNAP_STATUS:
        if pr.state is not ProgressState.SNAPSHOT:
            return
        if m.reject:
            # Snapshot failed: forget it, and probe from match again.
            pr.pending_snapshot = 0
            pr.become_probe()
            _log.debug("%x snapshot failed, resumed sending replication messages to %x [%r]", r.id, m.frm, pr)
        else:
            pr.become_probe()
            _log.debug(
                "%x snapshot succeeded, resumed sending replication messages to %x [%r]",
                r.id,
                m.frm,
                pr,
            )
        # Wait for an APP_RESP or heartbeat response before probing, so the
        # follower has time to apply the snapshot.
        pr.probe_sent = True
        return
    if t is MsgType.UNREACHABLE:
        # The transport could not deliver; stop streaming and probe instead.
        if pr.state is ProgressState.REPLICATE:
            pr.become_probe()
        _log.debug("%x failed to send message to %x because it is unreachable [%r]", r.id, m.frm, pr)
        return
    if t is MsgType.TRANSFER_LEADER:
        _transfer(r, m.frm)
        return


def check_quorum(r: Raft) -> None:
    pr = r.prs.progress.get(r.id)
    if pr is not None:
        pr.recent_active = True
    if not r.prs.quorum_active():
        _log.warning("%x stepped down to follower since quorum is not active", r.id)
        r.become_follower(r.term, NONE)
        return
    # Mark everyone inactive until they respond again before the next check.
    for i, p in r.prs.items():
        if i != r.id:
            p.recent_active = False


def expire_stalled_snapshots(r: Raft) -> None:
    # The driver should report the fate of every SNAP (RawNode.report_snapshot).
    # If it never does (message lost, report forgotten), a Progress would stay
    # in SNAPSHOT for ever; after two election timeouts, assume the best and
    # probe from the snapshot index.  If the follower lacks it, its rejection
    # leads to a new snapshot.
    for _i, pr in r.prs.items():
        if pr.state is ProgressState.SNAPSHOT:
            pr.snapshot_checks += 1
            if pr.snapshot_checks >= 2:
                pr.become_probe()


def _propose(r: Raft, m: Message) -> None:
    if not m.entries:
        raise AssertionError(f"{r.id:x} stepped empty MsgProp")
    if r.id not in r.prs.progress:
        # We were removed from the configuration while leader.
        raise ProposalDropped(f"{r.id:x} is no longer a member")
    if r.lead_transferee != NONE:
        raise ProposalDropped(f"{r.id:x} is transferring leadership to {r.lead_transferee:x}")
    ents = list(m.entries)
    for i, e in enumerate(ents):
        if e.type is EntryType.CONF_CHANGE:
            if r.pending_conf_index > r.log.applied:
                raise ProposalDropped(
                    f"possible unapplied conf change at index {r.pending_conf_index} "
                    f"(applied to {r.log.applied})"
                )
            r.pending_conf_index = r.log.last_index() + i + 1
    r.append_entry(ents)
    r.bcast_append()


def _committed_entry_in_current_term(r: Raft) -> bool:
    return r.log.term_or_zero(r.log.committed) == r.term


def _read_index(r: Raft, m: Message) -> None:
    if r.prs.is_singleton() and r.id in r.prs.voters:
        # Nobody else can be leader: the commit index is safe to read at once.
        _respond_to_read_index_req(r, m, r.log.committed)
        return
    if not _committed_entry_in_current_term(r):
        # Thesis §6.4 step 1: until an entry of this term commits, our commit
        # index may lag the previous leader's; answer later.
        r.pending_read_index_messages.append(m)
        return
    _send_read_index_response(r, m)


def _send_read_index_response(r: Raft, m: Message) -> None:
    # Thesis §6.4 steps 2-3: record the commit index, then confirm leadership
    # with a heartbeat round carrying the request context.
    r.read_only.add_request(r.log.committed, m)
    r.read_only.recv_ack(r.id, m.context)
    r.bcast_heartbeat_with_ctx(m.context)


def _release_pending_read_index_messages(r: Raft) -> None:
    if not r.pending_read_index_messages or not _committed_entry_in_current_term(r):
        return
    pending, r.pending_read_index_messages = r.pending_read_index_messages, []
    for m in pending:
        _send_read_index_response(r, m)


def _respond_to_read_index_req(r: Raft, req: Message, index: int) -> None:
    if req.frm in (NONE, r.id):
        r.read_states.append(ReadState(index=index, ctx=req.context))
    else:
        r.send(Message(MsgType.READ_INDEX_RESP, to=req.frm, index=index, context=req.context))


def _transfer(r: Raft, transferee: int) -> None:
    pr = r.prs.progress.get(transferee)
    if pr is None or pr.is_learner:
        _log.debug("%x is learner or unknown. Ignored transferring leadership", transferee)
        return
    last = r.lead_transferee
    if last != NONE:
        if last == transferee:
            _log.info(
                "%x [term %d] transfer leadership to %x is in progress, ignores request to same node %x",
                r.id,
                r.term,
                transferee,
                transferee,
            )
            return
        r.abort_leader_transfer()
        _log.info("%x [term %d] abort previous transferring leadership to %x", r.id, r.term, last)
    if transferee == r.id:
        _log.debug("%x is already leader. Ignored transferring leadership to r", r.id)
        return
    _log.info("%x [term %d] starts to transfer leadership to %x", r.id, r.term, transferee)
    # The transfer must finish within one election timeout or is aborted (thesis §3.10).
    r.election_elapsed = 0
    r.lead_transferee = transferee
    if pr.match == r.log.last_index():
        _log.info(
            "%x sends MsgTimeoutNow to %x immediately as %x already has up-to-date log",
            r.id,
            transferee,
            transferee,
        )
        r.send(Message(MsgType.TIMEOUT_NOW, to=transferee))
    else:
        r.send_append(transferee)
