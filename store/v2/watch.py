"""The v2 watcher hub: live watchers indexed by the exact path they watch.

Invariant: feeding a watcher never blocks apply. A watcher holds at most WATCHER_CAPACITY
undelivered events; one more and it is removed (etcd v2store/watcher.go closes the channel),
so a slow stream client ends instead of holding memory. The API layer waits on `wake`.
Must not import asyncio, time, or anything outside the stdlib and the v2 store package.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from store.v2.event import Event
from store.v2.history import EventHistory

WATCHER_CAPACITY = 100  # etcd: make(chan *Event, 100)


def _noop() -> None:
    return None


class Watcher:
    __slots__ = (
        "_hub",
        "closed",
        "events",
        "key",
        "recursive",
        "registered",
        "since_index",
        "start_index",
        "stream",
        "wake",
    )

    def __init__(
        self, hub: WatcherHub, key: str, recursive: bool, stream: bool, since_index: int, start_index: int
    ) -> None:
        self._hub = hub
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.start_index = start_index  # store index at registration (X-Etcd-Index of the answer)
        self.events: deque[Event] = deque()
        self.registered = False
        self.closed = False  # the response must end once `events` is drained (etcd closes the channel)
        self.wake: Callable[[], None] = _noop  # set by the API layer; called on event or removal

    def _offer(self, e: Event, original_path: bool, deleted: bool) -> bool:
        """etcd watcher.notify: True when the watcher was interested (and got it or overflowed)."""
        if (self.recursive or original_path or deleted) and e.index >= self.since_index:
            if len(self.events) >= WATCHER_CAPACITY:
                self.remove()
            else:
                self.events.append(e)
                self.wake()
            return True
        return False

    def remove(self) -> None:
        """Unregister and close; idempotent. Called on overflow and when the client goes away."""
        self.unregister()
        if not self.closed:
            self.closed = True
            self.wake()

    def unregister(self) -> None:
        """Stop receiving events without closing (after a one-shot delivery)."""
        if self.registered:
            self.registered = False
            self._hub._discard(self)


def is_hidden(watch_path: str, key_path: str) -> bool:
    """etcd isHidden: does the part of key_path below watch_path contain a `_` segment?"""
    if len(watch_path) > len(key_path):
        return False
    after = "/" + key_path[len(watch_path) :]
    return "/_" in after


class WatcherHub:
    def __init__(self, history: EventHistory) -> None:
        self.history = history
        self.watchers: dict[str, dict[Watcher, None]] = {}
        self.count = 0

    def watch(self, key: str, recursive: bool, stream: bool, since_index: int, store_index: int) -> Watcher:
        """Register a watcher, or answer it at once from history (then it is not registered).

        Raises EventIndexCleared when since_index is older than the history window.
        """
        event = self.history.scan(key, recursive, since_index, store_index)
        w = Watcher(self, key, recursive, stream, since_index, store_index)
        if event is not None:
            # etcd answers from history without registering, even a stream watcher: the
            # stream then stays open but silent until the client leaves.
            w.events.append(event)
            return w
        w.registered = True
        self.watchers.setdefault(key, {})[w] = None
        self.count += 1
        return w

    def _discard(self, w: Watcher) -> None:
        group = self.watchers.get(w.key)
        if group is not None and w in group:
            del group[w]
            self.count -= 1
            if not group:
                del self.watchers[w.key]

    def add(self, e: Event) -> None:
        """Record an event in history without notifying anyone (refresh events)."""
        self.history.add(e)

    def notify(self, e: Event) -> None:
        """Record e and notify watchers on every ancestor path of its key (etcd watcherHub.notify)."""
        self.history.add(e)
        if not self.watchers:
            return  # nobody waits: no ancestor path to look up
        key = e.node.key
        self.notify_watchers(e, "/", False)
        if key == "/":
            return
        end = 0
        while True:
            end = key.find("/", end + 1)
            current = key if end < 0 else key[:end]
            self.notify_watchers(e, current, False)
            if end < 0:
                return

    def notify_watchers(self, e: Event, node_path: str, deleted: bool) -> None:
        group = self.watchers.get(node_path)
        if not group:
            return
        original_path = e.node.key == node_path
        if not original_path and is_hidden(node_path, e.node.key):
            return
        for w in list(group):
            if w._offer(e, original_path, deleted) and not w.stream:
                w.unregister()
