"""Majority math (raft/core/quorum.py), checked against brute-force definitions."""

from __future__ import annotations

import itertools
import random

import pytest

from raft.core.quorum import VoteResult, committed_index, majority, vote_result


@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority_is_more_than_half(n: int, q: int) -> None:
    assert majority(n) == q
    assert 2 * majority(n) > n
    assert 2 * (majority(n) - 1) <= n


@pytest.mark.parametrize(
    ("match", "want"),
    [
        ({1: 5}, 5),
        ({1: 5, 2: 3, 3: 4}, 4),
        ({1: 5, 2: 5, 3: 1}, 5),
        ({1: 2, 2: 8, 3: 8, 4: 1}, 2),  # 4 voters need 3 acks
        ({1: 9, 2: 8, 3: 7, 4: 6, 5: 5}, 7),
    ],
)
def test_committed_index_is_highest_index_on_a_majority(match: dict[int, int], want: int) -> None:
    assert committed_index(match.keys(), match) == want


def test_committed_index_counts_missing_voters_as_zero() -> None:
    assert committed_index({1, 2, 3}, {1: 10}) == 0
    assert committed_index({1, 2, 3}, {1: 10, 2: 7}) == 7


def test_committed_index_ignores_non_voters() -> None:
    # Learner 4 has everything, but only voters count (learners never make a quorum).
    assert committed_index({1, 2, 3}, {1: 10, 2: 1, 3: 1, 4: 10}) == 1


def _dumb_committed(voters: list[int], match: dict[int, int]) -> int:
    # The largest index i such that a majority of voters have match >= i.
    best = 0
    for i in sorted({0, *match.values()}):
        if sum(1 for v in voters if match.get(v, 0) >= i) >= len(voters) // 2 + 1:
            best = i
    return best


def test_committed_index_matches_brute_force() -> None:
    rng = random.Random(7)
    for trial in range(2000):
        n = rng.randint(1, 7)
        voters = list(range(1, n + 1))
        match = {v: rng.randint(0, 10) for v in voters if rng.random() < 0.9}
        assert committed_index(voters, match) == _dumb_committed(voters, match), f"trial={trial} {match}"


def test_vote_result_exhaustively_for_five_voters() -> None:
    voters = [1, 2, 3, 4, 5]
    for outcome in itertools.product([None, True, False], repeat=5):
        votes = {v: o for v, o in zip(voters, outcome, strict=True) if o is not None}
        granted = sum(1 for o in outcome if o is True)
        missing = sum(1 for o in outcome if o is None)
        want = (
            VoteResult.WON
            if granted >= 3
            else VoteResult.PENDING
            if granted + missing >= 3
            else VoteResult.LOST
        )
        assert vote_result(voters, votes) is want, votes


def test_vote_result_ignores_votes_of_non_voters() -> None:
    assert vote_result({1, 2, 3}, {1: True, 9: True, 8: True}) is VoteResult.PENDING


def test_single_voter_wins_with_its_own_vote() -> None:
    assert vote_result({1}, {1: True}) is VoteResult.WON
