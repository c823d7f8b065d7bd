"""Value types shared by the Raft core, the WAL and the driver.

Invariant: everything here is an immutable value; nothing here does I/O. The types made on
every write (Entry, HardState, Message, SoftState) are not `frozen` dataclasses only because a
frozen one costs ~4x as much to construct (each field goes through object.__setattr__); they are
never assigned to after construction, and `unsafe_hash` keeps them hashable as values.
Must not import anything outside the standard library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

NONE: NodeId = NodeId(0)  # "no node": no vote, no leader (etcd raft.None)


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(slots=True, unsafe_hash=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True, unsafe_hash=True)
class HardState:
    """What must be on disk before any message that depends on it is sent (Raft §5.1)."""

    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


# ---------------------------------------------------------------------------
# Messages and the state reported to the driver (added with the Raft core).
# ---------------------------------------------------------------------------


class MsgType(enum.IntEnum):
    """Every message the core consumes or emits (etcd raftpb.MessageType).

    HUP, BEAT, CHECK_QUORUM, UNREACHABLE and SNAP_STATUS are local: the core
    makes them for itself (or the driver reports through RawNode methods), and
    RawNode.step() ignores them when they arrive from the network.  PROP is
    local here too, because this core never forwards proposals to the leader.
    The integer values are stable so that a codec may put them on the wire.
    """

    HUP = 0
    BEAT = 1
    PROP = 2
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10
    SNAP_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


@dataclass(slots=True, unsafe_hash=True)
class Message:
    """One Raft RPC, request or response (etcd raftpb.Message).

    `frm` is the sender (``from`` is a keyword).  `index`/`log_term` name the
    entry that precedes `entries` in APP, the candidate's last entry in
    VOTE/PRE_VOTE, and the acknowledged (or rejected) index in APP_RESP.
    `context` carries the ReadIndex request id on READ_INDEX, HEARTBEAT(_RESP)
    and READ_INDEX_RESP, and b"CampaignTransfer" on a forced VOTE.
    """

    type: MsgType
    to: int = 0
    frm: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class StateType(enum.Enum):
    FOLLOWER = "StateFollower"
    CANDIDATE = "StateCandidate"
    LEADER = "StateLeader"
    PRE_CANDIDATE = "StatePreCandidate"


@dataclass(slots=True, unsafe_hash=True)
class SoftState:
    """Volatile state the driver may want to show (not persisted)."""

    lead: int = 0
    raft_state: StateType = StateType.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: reads with request `ctx` are linearizable once `index` is applied.

    Raft thesis §6.4: the leader records its commit index, confirms it is still
    leader with a heartbeat round, and only then hands the index out.
    """

    index: int
    ctx: bytes


class CampaignType(enum.Enum):
    """Why a node campaigns; TRANSFER skips pre-vote and overrides the voters' leader lease."""

    PRE_ELECTION = "CampaignPreElection"
    ELECTION = "CampaignElection"
    TRANSFER = "CampaignTransfer"


# Context of a VOTE sent because of TIMEOUT_NOW: voters must not ignore it
# because of their leader lease (Raft thesis §3.10, leadership transfer).
CAMPAIGN_TRANSFER = b"CampaignTransfer"
