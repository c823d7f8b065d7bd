"""The Raft log as the core sees it: persisted entries (Storage) plus an unstable tail.

Modelled on etcd-io/raft log.go and log_unstable.go.

Invariants:
  * applied <= committed <= last_index(); committed never decreases.
  * ``unstable.entries[i]`` has index ``unstable.offset + i``; everything below
    ``unstable.offset`` is in Storage (or in the unstable snapshot).
  * An entry at or below `committed` is never truncated (Raft §5.4, Leader
    Completeness); violating that raises AssertionError, as etcd panics.

Must not import anything outside the standard library and raft.core.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.core.errors import Compacted, Unavailable
from raft.core.storage import Storage, limit_size
from raft.core.types import Entry, Snapshot


class Unstable:
    """Entries and at most one snapshot that the driver has not yet persisted."""

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        # Only drop the prefix if entry i is still the one that was persisted:
        # it may have been replaced by a newer leader's entry in the meantime.
        gt = self.maybe_term(i)
        if gt is None:
            return
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, s: Snapshot) -> None:
        self.offset = s.meta.index + 1
        self.entries = []
        self.snapshot = s

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable; the driver's Storage.append truncates
            # the persisted suffix when these entries are persisted.
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = [*self.entries[: after - self.offset], *ents]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        upper = self.offset + len(self.entries)
        if lo > hi or lo < self.offset or hi > upper:
            raise AssertionError(f"unstable.slice[{lo},{hi}) out of bound [{self.offset},{upper}]")
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Storage plus Unstable, with the commit and apply cursors."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(offset=last + 1)
        # Everything up to the snapshot is committed and applied by definition.
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- indexes and terms --------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry i; raises Compacted below first_index() - 1, Unavailable past last_index()."""
        u = self.unstable
        if u.offset <= i < u.offset + len(u.entries):
            return u.entries[i - u.offset].term  # unstable entries lie within both bounds
        dummy = self.first_index() - 1
        if i < dummy:
            raise Compacted(f"term({i}): first index is {dummy + 1}")
        if i > self.last_index():
            raise Unavailable(f"term({i}): last index is {self.last_index()}")
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        """term(i), or 0 when i is compacted or not yet present (never matches a real term)."""
        try:
            return self.term(i)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up-to-date as ours."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and lasti >= self.last_index())

    # -- appending ------------------------------------------------------------

    def maybe_append(self, index: int, log_term: int, committed: int, ents: Sequence[Entry]) -> int | None:
        """Follower side of AppendEntries (Raft §5.3).

        Returns the index of the last new entry if (index, log_term) matches our
        log, else None.  Conflicting entries and everything after them are
        replaced; the commit index follows the leader's, capped at what we hold.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflicts with committed entry [committed({self.committed})]"
                )
            self.append(ents[ci - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term.

        Used for the fast back-off after a rejected append (Raft §5.3, "the
        follower can include the term of the conflicting entry"): every entry in
        (i, index] has a term above `term`, so it cannot match the other log.
        A compacted or missing index may match, so it is returned with term 0.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    # -- commit / apply / stable cursors -----------------------------------------

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise AssertionError(
                    f"tocommit({to_commit}) is out of range [lastIndex({self.last_index()})]. "
                    "Was the raft log corrupted, truncated, or lost?"
                )
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        # Raft §5.4.2: only an entry of the current term is committed by counting replicas.
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(
                f"applied({i}) is out of range [prevApplied({self.applied}), committed({self.committed})]"
            )
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, s: Snapshot) -> None:
        self.committed = s.meta.index
        self.unstable.restore(s)

    # -- reading -------------------------------------------------------------------

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet applied (may include unstable ones; the driver persists first)."""
        off = max(self.applied + 1, self.first_index())
        hi = self.committed + 1
        if hi <= off:
            return []
        u = self.unstable
        if u.entries and off >= u.offset:
            # All unstable (the leader's newest writes): committed + 1 never passes last + 1.
            return u.entries[off - u.offset : hi - u.offset]
        return self.slice(off, hi)

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        """Every entry from first_index(); for tests and debugging."""
        return self.entries(self.first_index())

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi) limited to `max_size` bytes; raises Compacted if lo < first_index()."""
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise Compacted(f"slice({lo}, {hi}): first index is {fi}")
        if hi > self.last_index() + 1:
            raise AssertionError(f"slice[{lo},{hi}) out of bound [{fi},{self.last_index()}]")
        if lo == hi:
            return []
        ents: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            stored = self.storage.entries(lo, min(hi, off), max_size)
            if len(stored) < min(hi, off) - lo:
                # The size limit cut the stored part short; nothing unstable fits.
                return stored
            ents = stored
        if hi > off:
            ents.extend(self.unstable.slice(max(lo, off), hi))
        return limit_size(ents, max_size)
