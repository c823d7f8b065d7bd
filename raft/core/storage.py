"""The Storage seam between the Raft core and durable state, plus an in-memory implementation.

Storage is what the core reads; the driver is the only writer (it persists a
Ready's snapshot, entries and hard state before calling RawNode.advance).
Modelled on etcd-io/raft's Storage interface and MemoryStorage.

Invariant (MemoryStorage): ``_ents[0]`` is a dummy entry holding the index and
term of the last compacted entry (the snapshot), so ``term(first_index() - 1)``
is always answerable and the log is contiguous from there to ``last_index()``.

Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raft.core.errors import Compacted, SnapshotOutOfDate, Unavailable
from raft.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

# Rough per-entry framing cost, so that a batch of empty entries is still
# bounded by max_size_per_msg (etcd counts the protobuf size of each entry).
ENTRY_OVERHEAD = 16


def entry_size(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD


def limit_size(ents: Sequence[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of `ents` whose total size is at most `max_size`, but never empty.

    Always returning the first entry guarantees progress even when one entry
    alone exceeds the limit (etcd util.go limitSize).
    """
    if max_size is None or not ents:
        return list(ents)
    size = entry_size(ents[0])
    n = 1
    while n < len(ents):
        size += entry_size(ents[n])
        if size > max_size:
            break
        n += 1
    return list(ents[:n])


class Storage(Protocol):
    """Read access to the persisted Raft state.

    Every method answers from what has been made durable by the driver; the core
    never writes through this interface.  Returned lists belong to the caller.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved HardState and the ConfState of the latest snapshot (empty if none)."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at most `max_size` bytes but at least one entry if any.

        Raises Compacted if lo <= the snapshot index, Unavailable if hi > last_index() + 1.
        """
        ...

    def term(self, i: int) -> int:
        """Term of entry i, for i in [first_index() - 1, last_index()].

        The term of first_index() - 1 is kept for log matching even though that
        entry itself is compacted.  Raises Compacted below that range and
        Unavailable above it.
        """
        ...

    def first_index(self) -> int:
        """Index of the first entry that may be read with entries(); older ones are in the snapshot."""
        ...

    def last_index(self) -> int:
        """Index of the last entry in storage (the snapshot index if the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (empty if none was ever taken or received)."""
        ...


class MemoryStorage:
    """Storage backed by Python lists; what tests and the simulated network persist into."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- Storage protocol -------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"entries({lo}, {hi}): compacted through {offset}")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries({lo}, {hi}): last index is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise Compacted(f"term({i}): compacted through {offset}")
        if i - offset >= len(self._ents):
            raise Unavailable(f"term({i}): last index is {self.last_index()}")
        return self._ents[i - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writers (used by the driver / tests) -----------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with `snap`; raises SnapshotOutOfDate if it is not newer."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(f"snapshot {snap.meta.index} <= {self._snapshot.meta.index}")
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of `index` (which must be in the log).

        The log is left alone; call compact() to drop the entries it covers.
        """
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(f"snapshot {index} <= {self._snapshot.meta.index}")
        if index > self.last_index():
            raise ValueError(f"snapshot {index} is out of bound lastindex({self.last_index()})")
        meta = SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(meta=meta, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including `compact_index` (it becomes the dummy entry).

        Raises Compacted if already compacted that far.  The caller must make
        sure a snapshot covers `compact_index` first, or lagging followers can
        never catch up.
        """
        offset = self._ents[0].index
        if compact_index <= offset:
            raise Compacted(f"compact({compact_index}): compacted through {offset}")
        if compact_index > self.last_index():
            raise ValueError(f"compact {compact_index} is out of bound lastindex({self.last_index()})")
        i = compact_index - offset
        head = Entry(term=self._ents[i].term, index=self._ents[i].index)
        # In place: the kept entries are moved, not copied one by one (no reference count of
        # each changes), so a step costs what it drops, not the whole log.
        self._ents[: i + 1] = (head,)

    def append(self, entries: Sequence[Entry]) -> None:
        """Persist `entries`, which must be contiguous and must not leave a gap after last_index().

        Entries at or before the compaction point are ignored; an existing suffix
        that overlaps `entries` is replaced (Raft §5.3: a conflicting suffix from
        an old term is truncated).
        """
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise ValueError(f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]")
        # in place: copying the whole log on every append made each write O(log length)
        del self._ents[offset:]
        self._ents.extend(entries)
