"""Single-member configuration changes: validate a change and compute the next ConfState.

Membership changes one member at a time and takes effect when the change is
applied (etcd-io/raft README, "Implementation notes"; Raft thesis §4.1), so no
joint configuration is needed: any two majorities of the old and new voter
sets overlap.

Invariant: the returned ConfState has disjoint, sorted voters and learners.
Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from raft.core.types import ConfState


@dataclass(frozen=True, slots=True)
class ConfChange:
    """What one applied CONF_CHANGE entry asks for (the app decodes it from entry.data)."""

    voters_add: tuple[int, ...] = ()
    voters_remove: tuple[int, ...] = ()
    learners_add: tuple[int, ...] = ()


def apply_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """The ConfState after `cc`.

    Adding a voter that is a learner promotes it.  Removing an id drops it
    whether voter or learner.  Demoting a voter to learner is refused
    (ValueError), as etcd 3.4 refuses it outside joint consensus.  Node id 0
    is reserved for "none" and is refused too.
    """
    voters = set(cs.voters)
    learners = set(cs.learners)
    for i in _ids(cc.voters_add):
        learners.discard(i)
        voters.add(i)
    for i in _ids(cc.learners_add):
        if i in voters:
            raise ValueError(f"{i:x} is a voter and cannot become a learner")
        learners.add(i)
    for i in _ids(cc.voters_remove):
        voters.discard(i)
        learners.discard(i)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


def _ids(ids: Iterable[int]) -> list[int]:
    out = list(ids)
    if any(i == 0 for i in out):
        raise ValueError("node id 0 is reserved")
    return out
