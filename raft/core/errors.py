"""Exceptions raised by the Raft core.

Invariant: each class names one outcome that a caller can act on; none of them
carries mutable state.  The app layer maps them to its ServerErrors once, at
its boundary.  Must not import anything outside the standard library.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by raft.core."""


class ProposalDropped(RaftError):
    """The proposal (or ReadIndex request) was not accepted; retrying later may work.

    Raised when no leader is known, when the leader is transferring leadership,
    when a conf change is already pending, or when the leader is no longer a
    member (etcd ErrProposalDropped).
    """


class NotLeader(RaftError):
    """This node is a follower; `leader_hint` is the leader it knows of (never 0)."""

    def __init__(self, leader_hint: int) -> None:
        super().__init__(f"not leader; leader is {leader_hint:x}")
        self.leader_hint = leader_hint


class Stopped(RaftError):
    """The node has been stopped (raised by drivers, never by the core itself)."""


class Compacted(RaftError):
    """The requested index precedes the first index still in storage (etcd ErrCompacted)."""


class Unavailable(RaftError):
    """The requested index is not yet in storage (etcd ErrUnavailable)."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than the current one was offered (etcd ErrSnapOutOfDate)."""
