"""Majority arithmetic: committed index and election outcome for one voter set.

Invariant: pure functions of their arguments; the answer does not depend on
iteration order.  (Joint consensus is not supported: membership changes one
member at a time, etcd-io/raft README "Implementation notes".)
Must not import anything outside the standard library.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = "VotePending"
    LOST = "VoteLost"
    WON = "VoteWon"


def majority(n: int) -> int:
    """Smallest number of voters that is more than half of `n` (Raft §5.2)."""
    return n // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """Largest index acknowledged by a majority of `voters` (missing voters count as 0).

    Sort the acknowledged indexes in decreasing order; the q-th one (q = majority)
    is held by at least q voters.  An empty voter set commits nothing here
    (etcd returns +inf for joint-config reasons we do not need).
    """
    if not voters:
        return 0
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(voters)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer be reached.

    Votes from non-voters are ignored.  An empty voter set wins, as in etcd,
    which lets a configuration without voters make progress in joint setups.
    """
    if not voters:
        return VoteResult.WON
    granted = rejected = missing = 0
    for v in voters:
        vote = votes.get(v)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
        else:
            rejected += 1
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
