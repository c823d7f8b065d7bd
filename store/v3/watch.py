"""MVCC watchers: per-watcher queues of events, fed synchronously by every committed write.

etcd's `mvcc/watchable_store.go` keeps synced and unsynced watcher groups and a goroutine that
catches unsynced ones up. Here apply is single-threaded and feeding a queue never blocks, so a
watcher is caught up at registration (history replay) and then stays synced: each commit
appends one batch `(revision, events)` to every interested watcher and calls its `wake`.

Invariants:
- a watcher sees each revision at most once and in increasing order (`next_rev` guards it);
- the events of one revision (one txn) are one batch, in the txn's order;
- DELETE events carry a kv with only key and mod_revision; prev_kv is attached only when the
  watcher asked for it and never to a creation (create_revision == mod_revision), as etcd's
  watch server does;
- nothing here blocks or raises into apply: `wake` is the gateway's and must only schedule.

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from store.v3types import Event, EventType, KeyValue


def _noop() -> None:
    return None


class MvccWatcher:
    """One watch. `batches` is drained by the gateway; the store only appends."""

    def __init__(
        self,
        group: WatcherGroup,
        key: bytes,
        end: bytes | None,
        start_rev: int,
        *,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
    ) -> None:
        self.id = 0
        self.batches: deque[tuple[int, list[Event]]] = deque()
        self.compacted = 0
        self.wake: Callable[[], None] = _noop
        self.key = key
        self.end = end  # None: the single key; b"": every key >= key
        self.next_rev = start_rev  # revisions below this are not for this watcher
        self.prev_kv = prev_kv
        self.no_put = no_put
        self.no_delete = no_delete
        self._group: WatcherGroup | None = group

    @property
    def active(self) -> bool:
        return self._group is not None

    def cancel(self) -> None:
        """Unregister; idempotent. Already queued batches stay for the gateway to drop."""
        group, self._group = self._group, None
        if group is not None:
            group.remove(self)

    def matches(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return key >= self.key and (self.end == b"" or key < self.end)

    def select(self, events: list[Event]) -> list[Event]:
        """This watcher's view of one revision's events: key range, filters, prev_kv."""
        out: list[Event] = []
        for ev in events:
            if not self.matches(ev.kv.key):
                continue
            if ev.type == EventType.PUT:
                if self.no_put:
                    continue
            elif self.no_delete:
                continue
            out.append(shape(ev, self.prev_kv))
        return out

    def deliver(self, rev: int, events: list[Event]) -> None:
        if rev < self.next_rev:
            return
        self.next_rev = rev + 1
        mine = self.select(events)
        if mine:
            self.batches.append((rev, mine))
            self.wake()


def shape(ev: Event, with_prev: bool) -> Event:
    """The event as a watcher sees it (see the module invariants)."""
    kv = ev.kv
    create = ev.type == EventType.PUT and kv.create_revision == kv.mod_revision
    prev: KeyValue | None = ev.prev_kv if with_prev and not create else None
    if prev is ev.prev_kv:
        return ev
    return Event(ev.type, kv, prev)


class WatcherGroup:
    """Registered watchers: single-key ones by key, range ones in a list (etcd uses an
    interval tree; ranges are rare enough here that a scan per commit is fine)."""

    def __init__(self) -> None:
        # dicts as ordered sets: delivery order is registration order, deterministic.
        self._by_key: dict[bytes, dict[MvccWatcher, None]] = {}
        self._ranges: dict[MvccWatcher, None] = {}

    def __len__(self) -> int:
        return sum(len(ws) for ws in self._by_key.values()) + len(self._ranges)

    def all(self) -> list[MvccWatcher]:
        out = [w for ws in self._by_key.values() for w in ws]
        out.extend(self._ranges)
        return out

    def add(self, w: MvccWatcher) -> None:
        if w.end is None:
            self._by_key.setdefault(w.key, {})[w] = None
        else:
            self._ranges[w] = None

    def remove(self, w: MvccWatcher) -> None:
        if w.end is None:
            ws = self._by_key.get(w.key)
            if ws is not None:
                ws.pop(w, None)
                if not ws:
                    del self._by_key[w.key]
        else:
            self._ranges.pop(w, None)

    def notify(self, rev: int, events: list[Event]) -> None:
        """Hand one committed revision to every watcher whose range it touches."""
        targets: dict[MvccWatcher, None] = {}
        if self._by_key:
            for ev in events:
                ws = self._by_key.get(ev.kv.key)
                if ws:
                    targets.update(ws)
        targets.update(self._ranges)
        for w in targets:
            w.deliver(rev, events)
