"""Tests that follow the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version), section by section, in the manner of
etcd-io/raft raft_paper_test.go.  Pre-vote and check-quorum are off here so the
message flow is the paper's own.
"""

from __future__ import annotations

import pytest

from raft.core.raft import Raft
from raft.core.storage import MemoryStorage
from raft.core.types import Entry, HardState, Message, MsgType, StateType
from tests.support.simnet import new_raft, take_msgs


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(term=t, index=start + i) for i, t in enumerate(terms)]


def storage_with(terms: list[int], hs: HardState | None = None) -> MemoryStorage:
    st = MemoryStorage()
    st.append(entries(*terms))
    if hs is not None:
        st.set_hard_state(hs)
    return st


def elect(r: Raft) -> None:
    """Make `r` leader by campaigning and granting every vote."""
    r.step(Message(MsgType.HUP))
    for m in take_msgs(r):
        if m.type is MsgType.VOTE:
            r.step(Message(MsgType.VOTE_RESP, frm=m.to, to=r.id, term=r.term))
    assert r.state is StateType.LEADER
    take_msgs(r)


def commit_noop(r: Raft) -> None:
    """Have every follower acknowledge everything the leader holds."""
    for i in r.prs.ids():
        if i != r.id:
            r.step(Message(MsgType.APP_RESP, frm=i, to=r.id, term=r.term, index=r.log.last_index()))
    take_msgs(r)


# -- §5.1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_node_updates_term_and_becomes_follower_on_higher_term(role: str) -> None:
    # §5.1: "If one server's current term is smaller than the other's, then it
    # updates its current term to the larger value. If a candidate or leader
    # discovers that its term is out of date, it immediately reverts to follower."
    r = new_raft(1, [1, 2, 3])
    if role == "candidate":
        r.become_candidate()
    elif role == "leader":
        r.become_candidate()
        r.become_leader()
    r.step(Message(MsgType.APP, frm=2, to=1, term=5))
    assert (r.state, r.term, r.lead) == (StateType.FOLLOWER, 5, 2)


def test_node_ignores_requests_with_stale_term() -> None:
    # §5.1: "If a server receives a request with a stale term number, it rejects the request."
    r = new_raft(1, [1, 2, 3])
    r.become_follower(3, 2)
    r.step(Message(MsgType.APP, frm=3, to=1, term=2, index=0, log_term=0, entries=tuple(entries(2))))
    assert r.log.last_index() == 0
    assert (r.term, r.lead) == (3, 2)


def test_node_starts_as_follower() -> None:
    # §5.2: "When servers start up, they begin as followers."
    r = new_raft(1, [1, 2, 3])
    assert r.state is StateType.FOLLOWER


# -- §5.2 Leader election ----------------------------------------------------------------------


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    # §5.2: "Leaders send periodic heartbeats ... to all followers in order to maintain their authority."
    r = new_raft(1, [1, 2, 3], heartbeat_ticks=2)
    elect(r)
    r.tick()
    assert take_msgs(r) == []
    r.tick()
    beats = take_msgs(r)
    assert sorted((m.type, m.to) for m in beats) == [(MsgType.HEARTBEAT, 2), (MsgType.HEARTBEAT, 3)]
    assert all(m.term == r.term for m in beats)


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_election_starts_after_election_timeout(role: str) -> None:
    # §5.2: "If a follower receives no communication over a period of time called
    # the election timeout, then it ... begins an election"; "it increments its
    # current term and transitions to candidate state. It then votes for itself and
    # issues RequestVote RPCs in parallel to each of the other servers".  A candidate
    # whose election times out starts a new one the same way.
    r = new_raft(1, [1, 2, 3])
    if role == "candidate":
        r.become_candidate()
    term = r.term
    for _ in range(2 * r.election_timeout):
        r.tick()
    assert (r.state, r.term, r.vote) == (StateType.CANDIDATE, term + 1, 1)
    votes = take_msgs(r)
    assert sorted((m.type, m.to, m.term) for m in votes) == [
        (MsgType.VOTE, 2, term + 1),
        (MsgType.VOTE, 3, term + 1),
    ]


@pytest.mark.parametrize(
    ("size", "grants", "state"),
    [
        (1, {}, StateType.LEADER),
        (3, {2: True, 3: True}, StateType.LEADER),
        (3, {2: True}, StateType.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, StateType.LEADER),
        (5, {2: True, 3: True}, StateType.LEADER),
        (3, {2: False, 3: False}, StateType.FOLLOWER),
        (5, {2: False, 3: False, 4: False}, StateType.FOLLOWER),
        (3, {}, StateType.CANDIDATE),
        (5, {2: True}, StateType.CANDIDATE),
        (5, {2: False, 3: False}, StateType.CANDIDATE),
    ],
)
def test_candidate_wins_only_with_a_majority_of_votes(
    size: int, grants: dict[int, bool], state: StateType
) -> None:
    # §5.2: "A candidate wins an election if it receives votes from a majority of
    # the servers in the full cluster for the same term."
    r = new_raft(1, list(range(1, size + 1)))
    r.step(Message(MsgType.HUP))
    for frm, granted in grants.items():
        r.step(Message(MsgType.VOTE_RESP, frm=frm, to=1, term=r.term, reject=not granted))
    assert r.state is state
    assert r.term == 1


@pytest.mark.parametrize(
    ("vote", "candidate", "granted"),
    [(0, 2, True), (0, 3, True), (2, 2, True), (2, 3, False), (3, 2, False), (3, 3, True)],
)
def test_follower_votes_at_most_once_per_term(vote: int, candidate: int, granted: bool) -> None:
    # §5.2: "Each server will vote for at most one candidate in a given term, on a
    # first-come-first-served basis."
    st = MemoryStorage()
    st.set_hard_state(HardState(term=1, vote=vote))
    r = new_raft(1, [1, 2, 3], storage=st)
    r.step(Message(MsgType.VOTE, frm=candidate, to=1, term=1))
    (resp,) = take_msgs(r)
    assert (resp.type, resp.to, resp.reject) == (MsgType.VOTE_RESP, candidate, not granted)


def test_candidate_falls_back_to_follower_on_append_from_current_leader() -> None:
    # §5.2: "If the leader's term ... is at least as large as the candidate's
    # current term, then the candidate recognizes the leader as legitimate and returns to follower state."
    for term in (1, 2):
        r = new_raft(1, [1, 2, 3])
        r.step(Message(MsgType.HUP))
        assert r.state is StateType.CANDIDATE
        r.step(Message(MsgType.APP, frm=2, to=1, term=term))
        assert (r.state, r.term, r.lead) == (StateType.FOLLOWER, term, 2)


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_election_timeout_is_randomized_in_one_to_two_timeouts(role: str) -> None:
    # §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval."
    et = 10
    seen: set[int] = set()
    for seed in range(200):
        r = new_raft(1, [1, 2, 3], election_ticks=et, seed=seed)
        if role == "candidate":
            r.become_candidate()
        term = r.term
        ticks = 0
        while r.term == term:
            r.tick()
            ticks += 1
        assert et <= ticks < 2 * et, f"seed={seed}"
        seen.add(ticks)
    assert seen == set(range(et, 2 * et))


def test_followers_of_one_cluster_time_out_at_different_ticks() -> None:
    # §5.2: randomization spreads the timeouts so that one server usually times out first.
    timeouts = []
    for seed in range(1, 4):
        r = new_raft(seed, [1, 2, 3], seed=seed)
        ticks = 0
        while r.state is StateType.FOLLOWER:
            r.tick()
            ticks += 1
        timeouts.append(ticks)
    assert len(set(timeouts)) > 1, timeouts


# -- §5.3 Log replication -----------------------------------------------------------------------


def test_leader_replicates_a_proposal_to_all_followers() -> None:
    # §5.3: "The leader appends the command to its log as a new entry, then issues
    # AppendEntries RPCs in parallel to each of the other servers."
    r = new_raft(1, [1, 2, 3])
    elect(r)
    commit_noop(r)
    li = r.log.last_index()
    r.step(Message(MsgType.PROP, frm=1, to=1, entries=(Entry(term=0, index=0, data=b"some data"),)))
    assert r.log.last_index() == li + 1
    want = (Entry(term=1, index=li + 1, data=b"some data"),)
    msgs = take_msgs(r)
    assert sorted(m.to for m in msgs) == [2, 3]
    for m in msgs:
        assert (m.type, m.index, m.log_term, m.entries, m.commit) == (MsgType.APP, li, 1, want, li)


def test_leader_commits_an_entry_once_a_majority_has_it() -> None:
    # §5.3: "A log entry is committed once the leader that created the entry has
    # replicated it on a majority of the servers"; "it includes [the highest
    # committed index] in future AppendEntries RPCs".
    for size, acks, want_commit in [(3, [2], True), (5, [2], False), (5, [2, 3], True), (7, [2, 3], False)]:
        r = new_raft(1, list(range(1, size + 1)))
        elect(r)
        commit_noop(r)
        li = r.log.last_index()
        r.step(Message(MsgType.PROP, frm=1, to=1, entries=(Entry(term=0, index=0, data=b"x"),)))
        take_msgs(r)
        for a in acks:
            r.step(Message(MsgType.APP_RESP, frm=a, to=1, term=r.term, index=li + 1))
        assert (r.log.committed == li + 1) is want_commit, (size, acks)
        if want_commit:
            assert all(m.commit == li + 1 for m in take_msgs(r) if m.type is MsgType.APP)


def test_leader_commit_includes_preceding_entries() -> None:
    # §5.3: "This also commits all preceding entries in the leader's log, including
    # entries created by previous leaders."
    st = storage_with([1, 2])
    st.set_hard_state(HardState(term=2))
    r = new_raft(1, [1, 2, 3], storage=st)
    elect(r)  # term 3, appends an empty entry at index 3
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=3))
    assert r.log.committed == 3
    assert [e.index for e in r.log.next_ents()] == [1, 2, 3]


def test_follower_commits_what_the_leader_says_is_committed() -> None:
    # §5.3: "Once a follower learns that a log entry is committed, it applies the entry to its state machine."
    r = new_raft(1, [1, 2, 3])
    r.become_follower(1, 2)
    r.step(
        Message(MsgType.APP, frm=2, to=1, term=1, index=0, log_term=0, entries=tuple(entries(1, 1)), commit=1)
    )
    assert r.log.committed == 1
    r.step(Message(MsgType.HEARTBEAT, frm=2, to=1, term=1, commit=2))
    assert r.log.committed == 2


@pytest.mark.parametrize(
    ("term", "index", "reject"),
    [(0, 0, False), (1, 1, False), (2, 2, False), (1, 2, True), (3, 3, True), (2, 4, True)],
)
def test_follower_rejects_append_without_matching_prev_entry(term: int, index: int, reject: bool) -> None:
    # §5.3: "If the follower does not find an entry in its log with the same index
    # and term, then it refuses the new entries."
    st = storage_with([1, 2], HardState(term=2))
    r = new_raft(1, [1, 2, 3], storage=st)
    r.become_follower(2, 2)
    r.step(Message(MsgType.APP, frm=2, to=1, term=2, log_term=term, index=index))
    (resp,) = take_msgs(r)
    assert (resp.type, resp.reject) == (MsgType.APP_RESP, reject)
    if reject:
        assert resp.index == index
        assert resp.reject_hint <= r.log.last_index()


@pytest.mark.parametrize(
    ("index", "term", "new", "want"),
    [
        (2, 2, entries(3, start=3), [1, 2, 3]),
        (1, 1, entries(3, 4, start=2), [1, 3, 4]),
        (0, 0, entries(1), [1, 2]),
        (0, 0, entries(3), [3]),
    ],
)
def test_follower_deletes_conflicting_entries_and_appends_new_ones(
    index: int, term: int, new: list[Entry], want: list[int]
) -> None:
    # §5.3: "If an existing entry conflicts with a new one (same index but different
    # terms), delete the existing entry and all that follow it; append any new entries."
    st = storage_with([1, 2], HardState(term=2))
    r = new_raft(1, [1, 2, 3], storage=st)
    r.become_follower(2, 2)
    r.step(Message(MsgType.APP, frm=2, to=1, term=2, log_term=term, index=index, entries=tuple(new)))
    assert [e.term for e in r.log.all_entries()] == want


# Figure 7 of the paper: the leader's log (term 8) and six possible follower logs.
FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def exchange(leader: Raft, follower: Raft, limit: int = 200) -> int:
    """Deliver messages between the two until quiet; returns how many were delivered."""
    n = 0
    pending = take_msgs(leader)
    while pending and n < limit:
        m = pending.pop(0)
        n += 1
        target = follower if m.to == follower.id else leader
        if m.to not in (leader.id, follower.id):
            continue
        target.step(m)
        pending.extend(take_msgs(follower))
        pending.extend(take_msgs(leader))
    return n


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_leader_brings_figure7_follower_logs_into_agreement(case: str) -> None:
    # §5.3: "the leader handles inconsistencies by forcing the followers' logs to
    # duplicate its own"; Figure 7 (a)-(f).
    leader = new_raft(1, [1, 2, 3], storage=storage_with(FIG7_LEADER, HardState(term=8)))
    fterms = FIG7_FOLLOWERS[case]
    follower = new_raft(2, [1, 2, 3], storage=storage_with(fterms, HardState(term=max(fterms))))
    # Node 3 votes for the leader, so the case's follower need not (d can't: its log is newer).
    leader.step(Message(MsgType.HUP))
    take_msgs(leader)
    leader.step(Message(MsgType.VOTE_RESP, frm=3, to=1, term=leader.term))
    assert leader.state is StateType.LEADER
    leader.bcast_append()
    exchange(leader, follower)
    # The empty entry of term 9 commits once the follower holds it (with the leader, a majority).
    assert [e.term for e in follower.log.all_entries()] == [*FIG7_LEADER, 9]
    assert leader.log.committed == 11


def test_rejection_hint_needs_few_round_trips() -> None:
    # §5.3 (optimization): "the follower can include the term of the conflicting
    # entry and the first index it stores for that term"; with it the leader skips
    # whole terms.  Figure 7 (f) would take ~8 probes one index at a time.
    leader = new_raft(1, [1, 2, 3], storage=storage_with(FIG7_LEADER, HardState(term=8)))
    follower = new_raft(2, [1, 2, 3], storage=storage_with(FIG7_FOLLOWERS["f"], HardState(term=3)))
    leader.step(Message(MsgType.HUP))
    take_msgs(leader)
    leader.step(Message(MsgType.VOTE_RESP, frm=3, to=1, term=leader.term))
    assert leader.state is StateType.LEADER
    msgs = [m for m in take_msgs(leader) if m.to == 2]
    rounds = 0
    while msgs:
        rounds += 1
        (app,) = msgs
        follower.step(app)
        (resp,) = take_msgs(follower)
        leader.step(resp)
        msgs = [m for m in take_msgs(leader) if m.to == 2 and m.type is MsgType.APP]
        if not resp.reject:
            break
    assert 1 < rounds <= 4
    assert [e.term for e in follower.log.all_entries()] == [*FIG7_LEADER, 9]


# -- §5.4 Safety -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_term", "index", "granted"),
    [
        (1, 1, False),  # older last term
        (1, 5, False),
        (2, 1, False),  # same last term, shorter log
        (2, 2, True),  # same last term, same length
        (2, 3, True),
        (3, 1, True),  # newer last term wins whatever the length
    ],
)
def test_voter_rejects_candidate_whose_log_is_less_up_to_date(
    log_term: int, index: int, granted: bool
) -> None:
    # §5.4.1: "the voter denies its vote if its own log is more up-to-date than that
    # of the candidate ... If the logs have last entries with different terms, then
    # the log with the later term is more up-to-date. If the logs end with the same
    # term, then whichever log is longer is more up-to-date."
    r = new_raft(1, [1, 2, 3], storage=storage_with([1, 2], HardState(term=2)))
    r.step(Message(MsgType.VOTE, frm=2, to=1, term=3, log_term=log_term, index=index))
    (resp,) = take_msgs(r)
    assert resp.reject is not granted


def test_leader_does_not_commit_old_term_entry_by_counting_replicas() -> None:
    # §5.4.2, Figure 8: "Raft never commits log entries from previous terms by
    # counting replicas. Only log entries from the leader's current term are committed
    # by counting replicas".
    r = new_raft(1, [1, 2, 3], storage=storage_with([1, 2], HardState(term=2)))
    r.step(Message(MsgType.HUP))
    for m in take_msgs(r):
        r.step(Message(MsgType.VOTE_RESP, frm=m.to, to=1, term=r.term))
    take_msgs(r)
    assert r.log.last_term() == 3  # the empty entry of the new term
    # A majority now holds index 2 (term 2), but that alone commits nothing.
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=2))
    assert r.log.committed == 0
    # Once the current-term entry is on a majority, it and everything before it commit.
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=3))
    assert r.log.committed == 3


def test_new_leader_appends_empty_entry_of_its_term() -> None:
    # §8 / §5.4.2: "each leader commit[s] a blank no-op entry into the log at the start of its term".
    r = new_raft(1, [1, 2, 3], storage=storage_with([1, 1], HardState(term=1)))
    elect(r)
    last = r.log.all_entries()[-1]
    assert (last.index, last.term, last.data) == (3, 2, b"")


def test_follower_with_committed_entries_elects_only_leaders_that_hold_them() -> None:
    # §5.4.3 Leader Completeness, via §5.4.1: a committed entry is on a majority,
    # and a candidate lacking it cannot get a vote from any of them.
    r2 = new_raft(2, [1, 2, 3], storage=storage_with([1, 1, 1], HardState(term=1, commit=3)))
    r3 = new_raft(3, [1, 2, 3], storage=storage_with([1, 1, 1], HardState(term=1, commit=3)))
    stale = new_raft(1, [1, 2, 3], storage=storage_with([1], HardState(term=1)))
    stale.step(Message(MsgType.HUP))
    for m in take_msgs(stale):
        voter = r2 if m.to == 2 else r3
        voter.step(m)
        for resp in take_msgs(voter):
            stale.step(resp)
    assert stale.state is not StateType.LEADER
    assert stale.state is StateType.FOLLOWER  # both rejected: the election is lost
