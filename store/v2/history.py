"""The v2 event history: the last 1000 store events, answering `waitIndex` watches.

Invariant: events are appended in store-index order and every store index increment adds
exactly one event, so the event for index i sits at offset i - start_index. Must not import
anything outside the stdlib and the v2 store package.
"""

from __future__ import annotations

from collections import deque

from store.errors import EventIndexCleared
from store.v2.event import Event

HISTORY_CAPACITY = 1000  # etcd v2store: newWatchHub(1000)


class EventHistory:
    def __init__(self, capacity: int = HISTORY_CAPACITY) -> None:
        self.capacity = capacity
        self.events: deque[Event] = deque(maxlen=capacity)
        self.start_index = 0
        self.last_index = 0

    def add(self, e: Event) -> None:
        self.events.append(e)
        self.last_index = e.index
        self.start_index = self.events[0].index

    def scan(self, key: str, recursive: bool, index: int, store_index: int) -> Event | None:
        """First non-refresh event at or after `index` that a watch on `key` would match.

        etcd v2store EventHistory.scan: dir delete/expire events match by plain string
        prefix of the watched key, and the hidden rule does not apply here.
        """
        if index < self.start_index:
            raise EventIndexCleared(
                f"the requested history has been cleared [{self.start_index}/{index}]", store_index
            )
        if index > self.last_index:
            return None
        prefix = key if key.endswith("/") else key + "/"
        for i in range(index - self.start_index, len(self.events)):
            e = self.events[i]
            if e.refresh:
                continue
            ekey = e.node.key
            if ekey == key or (recursive and ekey.startswith(prefix)):
                return e
            if (
                e.action in ("delete", "expire")
                and e.prev_node is not None
                and e.prev_node.dir
                and key.startswith(ekey)
            ):
                return e
        return None
