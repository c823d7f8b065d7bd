"""Config: everything a RawNode is built from.

Invariant: a Config is an immutable value; validate() checks the same rules as
etcd-io/raft Config.validate.  The rng is the only source of randomness the
core ever uses (randomized election timeouts).
Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raft.core.storage import Storage


@dataclass(frozen=True)
class Config:
    id: int
    # Voters at bootstrap, used only when the storage holds no ConfState (no snapshot yet).
    peers: tuple[int, ...]
    storage: Storage
    rng: random.Random
    # A follower that hears nothing for a randomized [election_ticks, 2*election_ticks)
    # ticks starts an election (Raft §5.2); the leader sends heartbeats every heartbeat_ticks.
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    # Last index the application has applied (on restart); committed entries after it are redelivered.
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    # Raft thesis §9.6: a partitioned node asks before bumping its term, so it cannot disrupt a leader.
    pre_vote: bool = True
    # Raft thesis §6.2: a leader steps down without a quorum; followers with a live leader ignore votes.
    check_quorum: bool = True
    learners: tuple[int, ...] = ()

    def validate(self) -> None:
        """Raise ValueError if the Config cannot drive a correct node."""
        if self.id == 0:
            raise ValueError("cannot use none as id")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        if self.max_size_per_msg <= 0:
            raise ValueError("max size per message must be greater than 0")
        if set(self.peers) & set(self.learners):
            raise ValueError("a node cannot be both a voter and a learner")
        if any(p == 0 for p in (*self.peers, *self.learners)):
            raise ValueError("node id 0 is reserved")
