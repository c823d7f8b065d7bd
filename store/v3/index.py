"""The MVCC key index: for every key, the revisions at which it changed, split into generations.

This is etcd's `mvcc/key_index.go` + `index.go`. A key's life is a list of generations; a
generation runs from a creation to a deletion (its last revision is then the tombstone) and the
last generation is the live one (empty after a delete). A revision is `(main, sub)`: `main` is
the store revision of the write, `sub` its position inside that write (txn).

Invariants:
- revisions of one key strictly increase across all its generations;
- every generation but the last is non-empty and ends with its tombstone; the last one has no
  tombstone (it is empty when the key is currently deleted);
- `get(at)` answers from the index only, so a range at an old revision visits only the keys in
  the requested interval (sortedcontainers keeps them ordered), never the whole history;
- compaction keeps, per key, the newest revision <= the compaction point unless it is a
  tombstone, and drops keys that become empty (etcd `keyIndex.compact`).

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator

from sortedcontainers import SortedDict

Rev = tuple[int, int]  # (main, sub)

# Upper bound for `sub` in bisect keys: a txn never has anywhere near 2**62 writes.
MAX_SUB = 1 << 62


class Generation:
    __slots__ = ("created", "revs", "ver")

    def __init__(self) -> None:
        self.created = 0  # main revision of the creation (create_revision)
        self.ver = 0  # puts in this generation so far, compacted ones included
        self.revs: list[Rev] = []


class KeyIndex:
    __slots__ = ("generations", "key", "modified")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified: Rev = (0, 0)
        self.generations: list[Generation] = [Generation()]

    def put(self, rev: Rev, created: int | None = None, ver: int | None = None) -> None:
        """Record a put at `rev`. `created`/`ver` are given only when rebuilding from records
        (after a compaction the generation no longer holds its first revision)."""
        assert rev > self.modified, f"revision {rev} not after {self.modified} for {self.key!r}"
        g = self.generations[-1]
        if not g.revs:
            g.created = rev[0] if created is None else created
        g.revs.append(rev)
        g.ver = g.ver + 1 if ver is None else ver
        self.modified = rev

    def tombstone(self, rev: Rev) -> None:
        assert self.generations[-1].revs, f"tombstone of deleted key {self.key!r}"
        self.put(rev)
        self.generations.append(Generation())

    def live(self) -> Generation | None:
        """The current generation if the key exists now."""
        g = self.generations[-1]
        return g if g.revs else None

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def _find_generation(self, at: int) -> Generation | None:
        # etcd keyIndex.findGeneration: newest first; a finished generation whose tombstone is
        # at or before `at` means the key was deleted at `at`.
        last = len(self.generations) - 1
        for i in range(last, -1, -1):
            g = self.generations[i]
            if not g.revs:
                continue
            if i != last and g.revs[-1][0] <= at:
                return None
            if g.revs[0][0] <= at:
                return g
        return None

    def get(self, at: int) -> Rev | None:
        """The revision holding the key's value as of main revision `at`, None if absent."""
        g = self._find_generation(at)
        if g is None:
            return None
        return g.revs[bisect_right(g.revs, (at, MAX_SUB)) - 1]

    def compact(self, at: int, available: set[Rev]) -> None:
        """etcd keyIndex.compact: drop what no read at >= `at` can see; add kept revs to `available`."""
        gens = self.generations
        gi = 0
        # The first generation that is still alive at `at` (or the last one).
        while gi < len(gens) - 1 and gens[gi].revs[-1][0] <= at:
            gi += 1
        g = gens[gi]
        if g.revs:
            i = bisect_right(g.revs, (at, MAX_SUB)) - 1
            if i >= 0:
                available.add(g.revs[i])
                del g.revs[:i]
            # A finished generation reduced to its tombstone is invisible from `at` on.
            if len(g.revs) == 1 and gi != len(gens) - 1:
                available.discard(g.revs[0])
                gi += 1
        del gens[:gi]


class TreeIndex:
    """All key indexes, ordered by key."""

    def __init__(self) -> None:
        self._tree: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self._tree)

    def all(self) -> Iterator[KeyIndex]:
        """Every key index in key order."""
        tree = self._tree
        for k in tree:
            found: KeyIndex = tree[k]
            yield found

    def key_index(self, key: bytes) -> KeyIndex | None:
        ki: KeyIndex | None = self._tree.get(key)
        return ki

    def put(self, key: bytes, rev: Rev, created: int | None = None, ver: int | None = None) -> None:
        ki: KeyIndex | None = self._tree.get(key)
        if ki is None:
            ki = self._tree[key] = KeyIndex(key)
        ki.put(rev, created, ver)

    def tombstone(self, key: bytes, rev: Rev) -> None:
        ki: KeyIndex = self._tree[key]
        ki.tombstone(rev)

    def keys_in(self, key: bytes, end: bytes | None) -> Iterator[KeyIndex]:
        """Key indexes in [key, end): end None = only `key`, end b"" = to the last key."""
        if end is None:
            ki = self.key_index(key)
            if ki is not None:
                yield ki
            return
        if end == b"":
            keys = self._tree.irange(minimum=key)
        elif end <= key:
            return
        else:
            keys = self._tree.irange(key, end, inclusive=(True, False))
        tree = self._tree
        for k in keys:
            found: KeyIndex = tree[k]
            yield found

    def revisions(self, key: bytes, end: bytes | None, at: int) -> list[tuple[bytes, Rev]]:
        """(key, revision) of every key in the interval that exists at main revision `at`."""
        out: list[tuple[bytes, Rev]] = []
        for ki in self.keys_in(key, end):
            rev = ki.get(at)
            if rev is not None:
                out.append((ki.key, rev))
        return out

    def compact(self, at: int) -> set[Rev]:
        """Compact every key at `at`; returns the revisions <= `at` that must be kept."""
        available: set[Rev] = set()
        empty: list[bytes] = []
        for ki in self._tree.values():
            ki.compact(at, available)
            if ki.is_empty():
                empty.append(ki.key)
        for k in empty:
            del self._tree[k]
        return available
