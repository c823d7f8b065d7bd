"""Multi-member behaviour on the simulated network: elections, replication, catch-up,
snapshots, ReadIndex, leader transfer, CheckQuorum, PreVote, learners, membership.

Each test drives a SimNet (tests/support/simnet.py) deterministically from its seed.
"""

from __future__ import annotations

import pytest

from raft.core.errors import ProposalDropped
from raft.core.tracker import ProgressState
from raft.core.types import Message, MsgType, ReadState, StateType
from tests.support.simnet import SimNet


def elect(net: SimNet, i: int) -> None:
    net.campaign(i)
    net.stabilize()
    assert net.leader() == i, f"seed={net.seed}: {i} did not win"


def settle(net: SimNet, rounds: int = 5) -> None:
    """A few ticks with the network drained in between (heartbeats, retries)."""
    for _ in range(rounds):
        net.tick_all()
        net.stabilize()


def applied_data(net: SimNet, i: int) -> list[bytes]:
    return [d for _, _, d in net.nodes[i].state]


def test_three_nodes_elect_exactly_one_leader_by_timeout() -> None:
    for seed in range(20):
        net = SimNet(seed, [1, 2, 3])
        for _ in range(100):
            net.tick_all()
            net.stabilize()
            if net.leader() is not None:
                break
        lead = net.leader()
        assert lead is not None, f"seed={seed}"
        assert net.leaders() == [lead], f"seed={seed}"
        assert {net.rn(i).status.lead for i in (1, 2, 3)} == {lead}, f"seed={seed}"


def test_campaign_wins_and_all_followers_learn_the_leader() -> None:
    net = SimNet(1, [1, 2, 3])
    elect(net, 2)
    terms = {net.rn(i).status.term for i in (1, 2, 3)}
    assert terms == {1}
    # The leader's empty entry committed and was applied everywhere.
    settle(net, 2)
    assert all(net.nodes[i].applied_index == 1 for i in (1, 2, 3))


def test_proposals_replicate_and_apply_in_the_same_order_everywhere() -> None:
    net = SimNet(2, [1, 2, 3, 4, 5])
    elect(net, 1)
    for k in range(30):
        assert net.propose(1, b"v%d" % k)
        if k % 7 == 0:
            net.stabilize()
    net.stabilize()
    settle(net, 2)
    want = [b"v%d" % k for k in range(30)]
    for i in net.ids:
        assert applied_data(net, i) == want, f"seed={net.seed} node {i}"
    net.check_logs()


def test_replication_batches_by_size_and_limits_inflight_messages() -> None:
    net = SimNet(3, [1, 2, 3], max_size_per_msg=100, max_inflight_msgs=2, reorder=False)
    elect(net, 1)
    settle(net, 1)
    for k in range(20):
        net.rn(1).propose(b"x" * 40)  # two entries (56 bytes each with overhead) don't fit in 100
        if k == 0:
            net.process_ready(1)
    net.process_ready(1)
    apps = [m for m in net.inflight if m.type is MsgType.APP and m.to == 2]
    assert all(len(m.entries) == 1 for m in apps)
    # Flow control: at most max_inflight_msgs APPs with entries outstanding per follower.
    assert 1 <= len([m for m in apps if m.entries]) <= 2
    net.stabilize()
    settle(net, 3)
    assert len(applied_data(net, 2)) == 20


def test_follower_catches_up_after_partition_heals() -> None:
    net = SimNet(4, [1, 2, 3])
    elect(net, 1)
    net.isolate(3)
    for k in range(25):
        net.propose(1, b"p%d" % k)
    net.stabilize()
    assert net.rn(1).status.commit == net.rn(2).status.commit > net.rn(3).status.commit
    net.heal()
    settle(net, 5)
    assert applied_data(net, 3) == applied_data(net, 1) == [b"p%d" % k for k in range(25)]
    net.check_logs()


def test_follower_with_divergent_uncommitted_tail_is_repaired() -> None:
    # An old leader appends entries that never commit; the new leader overwrites them (§5.3).
    net = SimNet(5, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    net.isolate(1)
    for k in range(5):
        net.propose(1, b"lost%d" % k)
    net.stabilize()
    net.partition([2, 3], [1])
    # 2 and 3 wait out their leader lease, then elect one of them.
    for _ in range(100):
        net.tick(2)
        net.tick(3)
        net.stabilize()
        if any(net.rn(i).status.state is StateType.LEADER for i in (2, 3)):
            break
    (new_leader,) = [i for i in (2, 3) if net.rn(i).status.state is StateType.LEADER]
    for k in range(3):
        net.propose(new_leader, b"kept%d" % k)
    net.stabilize()
    net.heal()
    settle(net, 5)
    assert net.leader() == new_leader
    for i in (1, 2, 3):
        assert applied_data(net, i) == [b"kept0", b"kept1", b"kept2"], f"node {i}"
    net.check_logs()


def test_lagging_follower_receives_a_snapshot() -> None:
    net = SimNet(6, [1, 2, 3], snapshot_every=5)
    elect(net, 1)
    net.crash(3)
    for k in range(40):
        net.propose(1, b"s%d" % k)
        net.stabilize()
    assert net.nodes[1].storage.first_index() > 2  # leader compacted what 3 lacks
    snaps = 0
    net.restart(3)
    for _ in range(20):
        net.tick_all()
        while net.inflight:
            snaps += any(m.type is MsgType.SNAP and m.to == 3 for m in net.inflight)
            net.deliver_one()
    assert snaps >= 1
    assert applied_data(net, 3) == applied_data(net, 1) == [b"s%d" % k for k in range(40)]
    assert net.rn(1).status.progress[3].state is ProgressState.REPLICATE
    net.check_logs()


def test_lost_snapshot_is_resent() -> None:
    net = SimNet(7, [1, 2, 3], snapshot_every=3, reorder=False)
    elect(net, 1)
    net.isolate(3)
    for k in range(10):
        net.propose(1, b"s%d" % k)
        net.stabilize()
    net.heal()
    # Drop the first snapshot on the wire (the sender's transport reports it failed).
    dropped = False
    for _ in range(30):
        net.tick_all()
        while net.inflight:
            m = net.inflight[0]
            if m.type is MsgType.SNAP and not dropped:
                net.blocked.add((m.frm, m.to))
                net.deliver_one()
                net.blocked.clear()
                dropped = True
            else:
                net.deliver_one()
    assert dropped
    assert applied_data(net, 3) == applied_data(net, 1)


def test_read_index_on_leader_waits_for_heartbeat_quorum() -> None:
    net = SimNet(8, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    net.propose(1, b"x")
    net.stabilize()
    commit = net.rn(1).status.commit
    net.read_index(1, b"r1")
    assert net.nodes[1].read_states == []  # not before a quorum confirmed leadership
    assert any(m.type is MsgType.HEARTBEAT and m.context == b"r1" for m in net.inflight)
    net.stabilize()
    assert net.nodes[1].read_states == [ReadState(index=commit, ctx=b"r1")]


def test_read_index_on_follower_is_forwarded_to_leader() -> None:
    net = SimNet(9, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    net.propose(1, b"x")
    net.stabilize()
    net.read_index(3, b"f1")
    net.stabilize()
    (rs,) = net.nodes[3].read_states
    assert rs.ctx == b"f1"
    assert rs.index == net.rn(1).status.commit


def test_partitioned_leader_cannot_serve_read_index() -> None:
    # Thesis §6.4: a deposed leader must not answer reads from its stale state.
    net = SimNet(10, [1, 2, 3], reorder=False, check_quorum=False)
    elect(net, 1)
    settle(net, 1)
    net.isolate(1)
    net.read_index(1, b"stale")
    for _ in range(30):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].read_states == []


def test_read_index_waits_for_new_leader_to_commit_in_its_term() -> None:
    net = SimNet(11, [1, 2, 3], reorder=False)
    net.campaign(1)
    # Deliver only the votes, so the leader's empty entry is not yet committed.
    while net.rn(1).raft.state is not StateType.LEADER:
        net.deliver_one()
    assert net.rn(1).raft.log.committed == 0
    net.read_index(1, b"early")
    net.stabilize()
    (rs,) = net.nodes[1].read_states
    assert rs.index >= 1  # at least the new term's entry


def test_leader_transfer_to_up_to_date_follower() -> None:
    net = SimNet(12, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    term = net.rn(1).status.term
    net.rn(1).transfer_leader(3)
    net.process_ready(1)
    net.stabilize()
    assert net.leader() == 3
    assert net.rn(3).status.term == term + 1
    assert net.rn(1).status.state is StateType.FOLLOWER


def test_leader_transfer_to_lagging_follower_catches_it_up_first() -> None:
    net = SimNet(13, [1, 2, 3], reorder=False)
    elect(net, 1)
    net.isolate(3)
    for k in range(5):
        net.propose(1, b"t%d" % k)
    net.stabilize()
    net.heal()
    net.rn(1).transfer_leader(3)
    net.process_ready(1)
    # While the transfer is in progress, proposals are refused (etcd ErrProposalDropped).
    with pytest.raises(ProposalDropped):
        net.rn(1).propose(b"during")
    net.stabilize()
    assert net.leader() == 3
    settle(net, 2)
    assert applied_data(net, 3) == [b"t%d" % k for k in range(5)]


def test_leader_transfer_is_aborted_after_an_election_timeout() -> None:
    net = SimNet(14, [1, 2, 3], reorder=False, check_quorum=False)
    elect(net, 1)
    net.isolate(3)
    net.rn(1).transfer_leader(3)
    assert net.rn(1).status.lead_transferee == 3
    for _ in range(net.rn(1).raft.election_timeout):
        net.tick(1)
        net.stabilize()
    assert net.rn(1).status.lead_transferee == 0
    assert net.leader() == 1
    assert net.propose(1, b"after")


def test_transfer_leader_from_follower_is_forwarded() -> None:
    net = SimNet(15, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    net.rn(2).transfer_leader(2)
    net.process_ready(2)
    net.stabilize()
    assert net.leader() == 2


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    net = SimNet(16, [1, 2, 3], reorder=False)
    elect(net, 1)
    settle(net, 1)
    net.isolate(1)
    et = net.rn(1).raft.election_timeout
    for _ in range(2 * et):
        net.tick(1)
        net.stabilize()
    assert net.rn(1).status.state is StateType.FOLLOWER
    assert net.rn(1).status.term == 1  # stepped down without bumping its term


def test_without_check_quorum_isolated_leader_stays_leader() -> None:
    net = SimNet(17, [1, 2, 3], reorder=False, check_quorum=False)
    elect(net, 1)
    net.isolate(1)
    for _ in range(50):
        net.tick(1)
        net.stabilize()
    assert net.rn(1).status.state is StateType.LEADER


def test_pre_vote_keeps_rejoining_node_from_disrupting_leader() -> None:
    # Thesis §9.6: an isolated node does not bump its term, so on rejoining it does not depose the leader.
    net = SimNet(18, [1, 2, 3])
    elect(net, 1)
    settle(net, 1)
    net.isolate(3)
    for _ in range(100):
        net.tick(3)
        net.stabilize()
    assert net.rn(3).status.term == 1
    assert net.rn(3).status.state is StateType.PRE_CANDIDATE or net.rn(3).status.state is StateType.FOLLOWER
    net.heal()
    settle(net, 5)
    assert net.leader() == 1
    assert {net.rn(i).status.term for i in (1, 2, 3)} == {1}
    assert net.rn(3).status.lead == 1


def test_without_pre_vote_rejoining_node_disrupts_leader() -> None:
    # The contrast case: the behaviour pre-vote exists to prevent.
    net = SimNet(18, [1, 2, 3], pre_vote=False, check_quorum=False)
    elect(net, 1)
    settle(net, 1)
    net.isolate(3)
    for _ in range(100):
        net.tick(3)
        net.stabilize()
    assert net.rn(3).status.term > 1
    net.heal()
    settle(net, 5)
    assert net.rn(1).status.term > 1


def test_check_quorum_lease_ignores_vote_from_higher_term() -> None:
    # Thesis §4.2.3: a follower that heard from its leader within the minimum
    # election timeout ignores RequestVote, even from a higher term.
    net = SimNet(19, [1, 2, 3], pre_vote=False, reorder=False)
    elect(net, 1)
    settle(net, 1)
    f = net.rn(2)
    f.step(Message(MsgType.VOTE, frm=3, to=2, term=5, index=100, log_term=5))
    assert f.status.term == 1
    assert f.status.lead == 1
    assert not any(m.type is MsgType.VOTE_RESP for m in f.ready().messages)


def test_learner_receives_entries_but_does_not_vote_or_count() -> None:
    net = SimNet(20, [1, 2, 3], learners=[4], reorder=False)
    elect(net, 1)
    votes = [m for m in net.inflight if m.to == 4]
    assert not any(m.type in (MsgType.VOTE, MsgType.PRE_VOTE) for m in votes)
    net.propose(1, b"a")
    net.stabilize()
    settle(net, 2)
    assert applied_data(net, 4) == [b"a"]
    # With two voters down, the learner cannot help commit.
    net.isolate(2)
    net.isolate(3)
    commit = net.rn(1).status.commit
    net.propose(1, b"b")
    net.stabilize()
    assert net.rn(1).status.commit == commit


def test_add_member_then_remove_member() -> None:
    net = SimNet(21, [1, 2, 3], reorder=False)
    elect(net, 1)
    net.propose(1, b"before")
    net.stabilize()
    net.add_node(4, peers=[1, 2, 3])
    assert net.propose_conf_change(1, b"add 4")
    net.stabilize()
    settle(net, 5)
    assert net.nodes[1].conf_state.voters == (1, 2, 3, 4)
    assert net.nodes[4].conf_state.voters == (1, 2, 3, 4)
    assert applied_data(net, 4) == [b"before"]
    assert net.rn(4).raft.promotable()
    # Four voters: the quorum is three, so one more node down still commits.
    net.isolate(3)
    assert net.propose(1, b"with4")
    net.stabilize()
    assert applied_data(net, 4)[-1] == b"with4"
    net.heal()
    assert net.propose_conf_change(1, b"remove 2")
    net.stabilize()
    settle(net, 3)
    assert list(net.nodes[1].conf_state.voters) == [1, 3, 4]
    net.isolate(2)
    assert net.propose(1, b"without2")
    net.stabilize()
    assert applied_data(net, 3)[-1] == b"without2"
    net.check_logs()


def test_same_seed_gives_the_same_run() -> None:
    def trace(seed: int) -> list[tuple[int, int, int, int]]:
        net = SimNet(seed, [1, 2, 3])
        net.drop_rate = 0.1
        out: list[tuple[int, int, int, int]] = []
        for k in range(400):
            if k % 3 == 0:
                net.tick(net.rng.choice(net.alive()))
            lead = net.leader()
            if lead is not None and k % 10 == 0:
                net.propose(lead, b"%d" % k)
            net.deliver_one()
            out.extend(
                (i, net.rn(i).raft.term, net.rn(i).raft.log.committed, net.rn(i).raft.lead) for i in (1, 2, 3)
            )
        return out

    assert trace(42) == trace(42)
    assert trace(42) != trace(43)
