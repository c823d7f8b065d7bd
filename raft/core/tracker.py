"""What the leader knows about each peer's log: Progress, the inflight window, and the tracker.

Modelled on etcd-io/raft tracker/ (progress.go, inflights.go, tracker.go).

Invariants:
  * match < next for every Progress (next is the next index to send).
  * In REPLICATE, `inflights` holds the last index of each unacknowledged APP,
    in increasing order, and at most `capacity` of them.
  * voters and learners are disjoint; progress has exactly their union as keys.

Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator

from raft.core import quorum
from raft.core.types import ConfState


class ProgressState(enum.Enum):
    # PROBE: send one APP per heartbeat interval until we learn the follower's match.
    PROBE = "StateProbe"
    # REPLICATE: match is known; stream APPs optimistically, bounded by inflights.
    REPLICATE = "StateReplicate"
    # SNAPSHOT: a snapshot is on its way; send nothing until it is acknowledged.
    SNAPSHOT = "StateSnapshot"


class Inflights:
    """A bounded FIFO of the last index of each APP sent but not yet acknowledged."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def add(self, index: int) -> None:
        if self.full():
            raise AssertionError("cannot add into a full inflights")
        self._q.append(index)

    def free_le(self, to: int) -> None:
        """Forget every message whose last index is <= `to` (they are acknowledged)."""
        while self._q and self._q[0] <= to:
            self._q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()


class Progress:
    """The leader's view of one follower (or of itself)."""

    def __init__(self, next: int, match: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = match
        self.next = next
        self.state = ProgressState.PROBE
        # In PROBE: an APP was sent and we wait for its answer (or a heartbeat response).
        self.probe_sent = False
        # In SNAPSHOT: the index of the snapshot being sent.
        self.pending_snapshot = 0
        # Set by any response from the peer; cleared by CheckQuorum each election timeout.
        self.recent_active = False
        # How many CheckQuorum intervals this progress has spent in SNAPSHOT (see raft.py).
        self.snapshot_checks = 0
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.name})"

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_checks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot the follower holds at least pending_snapshot, so
        # probing from there avoids re-sending what the snapshot covered.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement of index `n`; True if match moved forward."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejected APP for index `rejected`; False if the rejection is stale.

        `match_hint` is the leader's guess of the largest index that may match
        (from the follower's reject_hint and log_term), so next can skip
        many entries at once instead of one per round trip.
        """
        if self.state is ProgressState.REPLICATE:
            # In REPLICATE, next is far ahead; a rejection below match is stale.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # In PROBE only the rejection of the latest probe (next - 1) counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """Voters, learners, their Progress, and the votes of the current election."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def ids(self) -> list[int]:
        """All members in a fixed (sorted) order, so message order is deterministic."""
        return sorted(self.progress)

    def items(self) -> Iterator[tuple[int, Progress]]:
        for i in self.ids():
            yield i, self.progress[i]

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def init_progress(self, id: int, match: int, next: int, is_learner: bool) -> None:
        if is_learner:
            self.voters.discard(id)
            self.learners.add(id)
        else:
            self.learners.discard(id)
            self.voters.add(id)
        self.progress[id] = Progress(
            next=next, match=match, max_inflight=self.max_inflight, is_learner=is_learner
        )

    def remove(self, id: int) -> None:
        self.voters.discard(id)
        self.learners.discard(id)
        self.progress.pop(id, None)
        self.votes.pop(id, None)

    def committed(self) -> int:
        if len(self.voters) == 1:  # a one-member cluster: its own match (runs on every write)
            (only,) = self.voters
            pr = self.progress.get(only)
            return pr.match if pr is not None else 0
        return quorum.committed_index(self.voters, {i: p.match for i, p in self.progress.items()})

    def quorum_active(self) -> bool:
        """CheckQuorum: has a majority of voters been heard from since the last check?"""
        active = {i: p.recent_active for i, p in self.progress.items() if i in self.voters}
        return quorum.vote_result(self.voters, active) is quorum.VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, id: int, granted: bool) -> None:
        # The first answer counts; a duplicated or reordered response must not flip it.
        self.votes.setdefault(id, granted)

    def tally_votes(self) -> tuple[int, int, quorum.VoteResult]:
        granted = sum(1 for i, v in self.votes.items() if v and i in self.voters)
        rejected = sum(1 for i, v in self.votes.items() if not v and i in self.voters)
        return granted, rejected, quorum.vote_result(self.voters, self.votes)
