"""RawNode and Ready: the single-member path the driver relies on, restarts, and API errors."""

from __future__ import annotations

import random

import pytest

from raft.core.config import Config
from raft.core.errors import NotLeader, ProposalDropped
from raft.core.rawnode import RawNode, Ready
from raft.core.storage import MemoryStorage
from raft.core.types import ConfState, EntryType, HardState, Message, MsgType, ReadState, SoftState, StateType
from tests.support.simnet import new_node


def persist(st: MemoryStorage, rd: Ready) -> None:
    """What the driver does before sending and applying (rawnode.py module docstring)."""
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)


def drain(rn: RawNode, st: MemoryStorage) -> list[Ready]:
    out = []
    while rn.has_ready():
        rd = rn.ready()
        persist(st, rd)
        rn.advance(rd)
        out.append(rd)
    return out


def single(st: MemoryStorage | None = None, seed: int = 1, **kw: object) -> tuple[RawNode, MemoryStorage]:
    st = st if st is not None else MemoryStorage()
    return new_node(1, (1,), random.Random(seed), st, **kw), st


def test_single_member_elects_itself_on_campaign() -> None:
    rn, _st = single()
    assert not rn.has_ready()
    rn.campaign()
    rd = rn.ready()
    assert rd.soft_state == SoftState(lead=1, raft_state=StateType.LEADER)
    assert rd.hard_state == HardState(term=1, vote=1, commit=1)
    # The leader's empty entry is appended and, with a quorum of one, committed at once.
    assert [(e.term, e.index, e.data) for e in rd.entries] == [(1, 1, b"")]
    assert rd.committed_entries == rd.entries
    assert rd.messages == ()
    assert rd.must_sync


def test_single_member_elects_itself_after_election_timeout() -> None:
    rn, _st = single(election_ticks=5)
    for _ in range(10):
        rn.tick()
    assert rn.status.state is StateType.LEADER


def test_single_member_commits_a_proposal_in_the_same_ready() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.propose(b"hello")
    rd = rn.ready()
    assert [e.data for e in rd.entries] == [b"hello"]
    assert [e.data for e in rd.committed_entries] == [b"hello"]
    assert rd.hard_state is not None and rd.hard_state.commit == rd.entries[-1].index
    persist(st, rd)
    rn.advance(rd)
    assert not rn.has_ready()
    assert rn.status.applied == rd.entries[-1].index


def test_term_grows_on_every_restart_over_the_same_storage() -> None:
    st = MemoryStorage()
    terms = []
    applied = 0
    for restart in range(4):
        rn, _ = single(st, seed=restart, applied=applied)
        rn.campaign()
        drain(rn, st)
        rn.propose(b"v%d" % restart)
        drain(rn, st)
        terms.append(rn.status.term)
        applied = rn.status.applied
        assert rn.status.state is StateType.LEADER
    assert terms == [1, 2, 3, 4]
    assert st.hard_state == HardState(term=4, vote=1, commit=st.last_index())
    data = [e.data for e in st.entries(1, st.last_index() + 1) if e.data]
    assert data == [b"v0", b"v1", b"v2", b"v3"]


def test_restart_redelivers_committed_entries_after_applied() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    for i in range(3):
        rn.propose(b"%d" % i)
    drain(rn, st)
    # Restart as if the app had applied only through index 2.
    rn2, _ = single(st, applied=2)
    rd = rn2.ready()
    assert [e.index for e in rd.committed_entries] == [3, 4]
    assert rd.entries == ()  # nothing new to persist


def test_ready_reports_hard_and_soft_state_only_when_changed() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.propose(b"x")
    rd = rn.ready()
    assert rd.soft_state is None  # still leader
    assert rd.hard_state == HardState(term=1, vote=1, commit=2)
    persist(st, rd)
    rn.advance(rd)
    rn.tick()
    assert not rn.has_ready()


def test_committed_entries_never_run_ahead_of_persisted_ones() -> None:
    # Every committed entry handed out is persisted already or in the same Ready.
    rn, st = single()
    rn.campaign()
    for i in range(20):
        rn.propose(b"%d" % i)
        if i % 3 == 0:
            rd = rn.ready()
            persisted = st.last_index()
            last_new = rd.entries[-1].index if rd.entries else persisted
            assert all(e.index <= max(persisted, last_new) for e in rd.committed_entries)
            persist(st, rd)
            rn.advance(rd)


def test_read_index_on_single_member_is_answered_at_once() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.propose(b"x")
    drain(rn, st)
    rn.read_index(b"req-1")
    rd = rn.ready()
    assert rd.read_states == (ReadState(index=rn.status.commit, ctx=b"req-1"),)
    rn.advance(rd)
    assert not rn.has_ready()


def test_read_index_needs_a_context() -> None:
    rn, _ = single()
    with pytest.raises(ValueError):
        rn.read_index(b"")


def test_propose_without_leader_is_dropped() -> None:
    rn = new_node(1, (1, 2, 3), random.Random(1))
    with pytest.raises(ProposalDropped):
        rn.propose(b"x")
    with pytest.raises(ProposalDropped):
        rn.read_index(b"r")


def test_propose_on_follower_names_the_leader() -> None:
    rn = new_node(1, (1, 2, 3), random.Random(1))
    rn.step(Message(MsgType.HEARTBEAT, frm=2, to=1, term=1))
    with pytest.raises(NotLeader) as exc:
        rn.propose(b"x")
    assert exc.value.leader_hint == 2


def test_propose_on_candidate_is_dropped() -> None:
    rn = new_node(1, (1, 2, 3), random.Random(1), pre_vote=False)
    rn.campaign()
    assert rn.status.state is StateType.CANDIDATE
    with pytest.raises(ProposalDropped):
        rn.propose(b"x")


def test_only_one_conf_change_may_be_pending() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.propose_conf_change(b"add 2")
    with pytest.raises(ProposalDropped):
        rn.propose_conf_change(b"add 3")
    rd = rn.ready()
    (cc,) = [e for e in rd.committed_entries if e.type is EntryType.CONF_CHANGE]
    persist(st, rd)
    cs = rn.apply_conf_change(voters_add=(2,))
    assert cs == ConfState(voters=(1, 2))
    rn.advance(rd)
    # Applied: the next one is accepted.
    rn.propose_conf_change(b"add 3")
    assert cc.data == b"add 2"


def test_adding_a_voter_to_a_single_member_needs_its_ack_to_commit() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.apply_conf_change(voters_add=(2,))
    rds = drain(rn, st)
    assert any(m.to == 2 and m.type is MsgType.APP for rd in rds for m in rd.messages)
    commit = rn.status.commit
    rn.propose(b"x")
    drain(rn, st)
    assert rn.status.commit == commit  # 2 voters: needs node 2


def test_network_cannot_inject_local_messages() -> None:
    rn = new_node(1, (1, 2, 3), random.Random(1))
    rn.step(Message(MsgType.HUP, frm=2, to=1))
    rn.step(Message(MsgType.PROP, frm=2, to=1, entries=()))
    assert rn.status.state is StateType.FOLLOWER


def test_response_from_unknown_node_is_ignored() -> None:
    rn, st = single()
    rn.campaign()
    drain(rn, st)
    rn.step(Message(MsgType.APP_RESP, frm=9, to=1, term=1, index=5))
    assert rn.status.commit == 1


def test_status_reports_progress_only_on_leader() -> None:
    rn, st = single()
    assert rn.status.progress == {}
    rn.campaign()
    drain(rn, st)
    p = rn.status.progress[1]
    assert (p.match, p.next) == (1, 2)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RawNode(Config(id=0, peers=(1,), storage=MemoryStorage(), rng=random.Random(0)))
    with pytest.raises(ValueError):
        RawNode(Config(id=1, peers=(1,), storage=MemoryStorage(), rng=random.Random(0), election_ticks=1))
    with pytest.raises(ValueError):
        RawNode(Config(id=1, peers=(1, 2), learners=(2,), storage=MemoryStorage(), rng=random.Random(0)))


def test_storage_conf_state_wins_over_peers() -> None:
    st = MemoryStorage()
    st.append([])
    rn0, _ = single(st)
    rn0.campaign()
    drain(rn0, st)
    st.create_snapshot(1, ConfState(voters=(1, 2, 3)), b"")
    rn = new_node(1, (1,), random.Random(1), st)
    assert rn.raft.prs.voters == {1, 2, 3}
    rn.campaign()
    assert rn.status.state is not StateType.LEADER  # now needs a quorum of three


def test_learner_never_campaigns() -> None:
    rn = new_node(2, (1,), random.Random(1), learners=(2,))
    for _ in range(100):
        rn.tick()
    rn.campaign()
    assert rn.status.state is StateType.FOLLOWER
    assert not any(m.type in (MsgType.VOTE, MsgType.PRE_VOTE) for m in rn.ready().messages)
