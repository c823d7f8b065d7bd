"""The v2 key tree: nodes, TTLs and the operations etcd's v2store performs.

Invariants:
- every successful mutation increments `current_index` by exactly one and records exactly one
  event (so the history stays contiguous); failed operations change nothing;
- paths are internal and clean (`/1/foo`: `/0` holds membership, `/1` user keys, `/2` v2 auth);
- the store is deterministic: expiry happens only in `delete_expired(now_ns)`, and `now_ns`
  comes through the log. The injected `clock` is used only for the displayed `ttl` countdown.

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from sortedcontainers import SortedList

from store.errors import (
    CompareFailed,
    DirNotEmpty,
    KeyNotFound,
    NodeExists,
    NotADir,
    NotAFile,
    RootReadOnly,
)
from store.v2.event import Action, Event, NodeView
from store.v2.history import EventHistory
from store.v2.watch import Watcher, WatcherHub

CLUSTER_PREFIX = "/0"
KEYS_PREFIX = "/1"
# etcd v2store minExpireTime: expirations before 2000-01-01 (e.g. a wrapped huge ttl) are permanent.
MIN_EXPIRE_NS = 946684800 * 1_000_000_000
NS_PER_S = 1_000_000_000

# A node in a snapshot: path, value (None for a directory), created and modified index, expiry.
# (A list after a restore, until the node changes: both encode alike.)
NodeRow = tuple[str, str | None, int, int, int | None] | list[Any]


class Node:
    __slots__ = ("children", "created_index", "expire_ns", "modified_index", "parent", "path", "value")

    def __init__(
        self,
        path: str,
        parent: Node | None,
        index: int,
        value: str | None,
        expire_ns: int | None,
    ) -> None:
        self.path = path
        self.parent = parent
        self.value = value  # None marks a directory
        self.children: dict[str, Node] | None = {} if value is None else None
        self.created_index = index
        self.modified_index = index
        self.expire_ns = expire_ns

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")


def split_path(path: str) -> tuple[str, str]:
    d, _, name = path.rpartition("/")
    return (d or "/"), name


def join(parent: str, name: str) -> str:
    return parent + name if parent.endswith("/") else parent + "/" + name


def node_sort_key(n: NodeView) -> bytes:
    return n.key.encode("utf-8", "surrogateescape")


class V2Store:
    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: 0)
        self.root = Node("/", None, 0, None, None)
        self.current_index = 0
        self.history = EventHistory()
        self.hub = WatcherHub(self.history)
        self._ttl_keys: SortedList = SortedList()  # (expire_ns, path)
        self.readonly = {"/", CLUSTER_PREFIX, KEYS_PREFIX}
        # Every node but the root as its snapshot row, in the order the nodes were made (so
        # parents come first, and each directory's children in their order); kept at every
        # change so that a snapshot only lists these tuples (see to_obj).
        self._rows: dict[str, NodeRow] = {}
        for ns in (CLUSTER_PREFIX, KEYS_PREFIX):
            assert self.root.children is not None
            self.root.children[ns[1:]] = self._keep(Node(ns, self.root, 0, None, None))
        self.stats: dict[str, int] = dict.fromkeys(STATS_FIELDS, 0)

    # ---- reading ---------------------------------------------------------------------------

    def _walk_get(self, path: str) -> Node:
        n = self.root
        if path == "/":
            return n
        for name in path[1:].split("/"):
            if n.children is None:
                raise NotADir(n.path, self.current_index)
            child = n.children.get(name)
            if child is None:
                raise KeyNotFound(join(n.path, name), self.current_index)
            n = child
        return n

    def _ttl_of(self, n: Node, now_ns: int) -> tuple[int | None, int]:
        if n.expire_ns is None:
            return None, 0
        # Go's Time.Sub saturates at the int64 Duration range (a wrapped huge ttl shows -9223372036)
        left = min(max(n.expire_ns - now_ns, -(1 << 63)), (1 << 63) - 1)
        ttl = left // NS_PER_S
        if left % NS_PER_S > 0:
            # floor + 1 is Go's truncation + 1 when positive and plain truncation when negative
            ttl += 1
        return n.expire_ns, ttl

    def _repr(self, n: Node, recursive: bool, sorted_: bool, now_ns: int, with_children: bool) -> NodeView:
        exp, ttl = self._ttl_of(n, now_ns)
        if n.children is None:
            return NodeView(n.path, n.value, False, exp, ttl, None, n.modified_index, n.created_index)
        view = NodeView(n.path, None, True, exp, ttl, None, n.modified_index, n.created_index)
        if with_children:
            kids = [
                self._repr(c, recursive, sorted_, now_ns, recursive)
                for c in n.children.values()
                if not c.name.startswith("_")
            ]
            if sorted_:
                kids.sort(key=node_sort_key)
            view.nodes = kids or None
        return view

    def get(self, path: str, recursive: bool, sorted_: bool) -> Event:
        try:
            n = self._walk_get(path)
        except Exception:
            self.stats["getsFail"] += 1
            raise
        self.stats["getsSuccess"] += 1
        view = self._repr(n, recursive, sorted_, self._clock(), True)
        return Event("get", view, None, self.current_index)

    def peek(self, path: str, recursive: bool = False) -> NodeView | None:
        """Internal read (membership, cluster version): not counted in the store stats."""
        try:
            n = self._walk_get(path)
        except (KeyNotFound, NotADir):
            return None
        return self._repr(n, recursive, True, self._clock(), True)

    # ---- writing ---------------------------------------------------------------------------

    def _prev(self, n: Node) -> NodeView:
        return self._repr(n, False, False, self._clock(), False)

    def _check_dir(self, dir_path: str) -> Node:
        """Walk to dir_path creating missing dirs (etcd checkDir), with index current+1."""
        n = self.root
        if dir_path == "/":
            return n
        for name in dir_path[1:].split("/"):
            assert n.children is not None
            child = n.children.get(name)
            if child is None:
                child = self._keep(Node(join(n.path, name), n, self.current_index + 1, None, None))
                n.children[name] = child
            elif child.children is None:
                raise NotADir(child.path, self.current_index)
            n = child
        return n

    def _keep(self, n: Node) -> Node:
        """Record n's current state as its snapshot row (after every change to it)."""
        self._rows[n.path] = (n.path, n.value, n.created_index, n.modified_index, n.expire_ns)
        return n

    def _set_ttl(self, n: Node, expire_ns: int | None) -> None:
        if n.expire_ns is not None:
            self._ttl_keys.discard((n.expire_ns, n.path))
        n.expire_ns = expire_ns
        if expire_ns is not None:
            self._ttl_keys.add((expire_ns, n.path))

    def _create(
        self,
        path: str,
        is_dir: bool,
        value: str,
        unique: bool,
        replace: bool,
        expire_ns: int | None,
        action: Action,
    ) -> Event:
        next_index = self.current_index + 1
        if unique:
            path = join(path, f"{next_index:020d}")
        if path in self.readonly:
            raise RootReadOnly("/", self.current_index)
        if expire_ns is not None and expire_ns < MIN_EXPIRE_NS:
            expire_ns = None
        dir_path, name = split_path(path)
        parent = self._check_dir(dir_path)
        assert parent.children is not None
        existing = parent.children.get(name)
        prev: NodeView | None = None
        if existing is not None:
            if not replace:
                raise NodeExists(path, self.current_index)
            if existing.is_dir:
                raise NotAFile(path, self.current_index)
            prev = self._prev(existing)
            self._remove(existing, False, False, None)
        n = Node(path, parent, next_index, None if is_dir else value, None)
        parent.children[name] = n
        self.current_index = next_index
        exp, ttl = None, 0
        if expire_ns is not None:  # (a new node has no TTL to drop first)
            self._set_ttl(n, expire_ns)
            exp, ttl = self._ttl_of(n, self._clock())
        self._keep(n)
        view = NodeView(path, None if is_dir else value, is_dir, exp, ttl, None, next_index, next_index)
        return Event(action, view, prev, next_index)

    def set(self, path: str, is_dir: bool, value: str, expire_ns: int | None, refresh: bool) -> Event:
        try:
            if refresh:
                value = self._walk_get(path).value or ""  # KeyNotFound / NotADir as etcd
            # No lookup first otherwise: _create finds an existing node, and raises the NotADir a
            # file on the way would have raised here (a new key's KeyNotFound cost ~2 us per set).
            e = self._create(path, is_dir, value, False, True, expire_ns, "set")
        except Exception:
            self.stats["setsFail"] += 1
            raise
        self.stats["setsSuccess"] += 1
        self._publish(e, refresh)
        return e

    def create(self, path: str, is_dir: bool, value: str, unique: bool, expire_ns: int | None) -> Event:
        try:
            e = self._create(path, is_dir, value, unique, False, expire_ns, "create")
        except Exception:
            self.stats["createFail"] += 1
            raise
        self.stats["createSuccess"] += 1
        self.hub.notify(e)
        return e

    def update(self, path: str, value: str, expire_ns: int | None, refresh: bool) -> Event:
        try:
            if path in self.readonly:
                raise RootReadOnly("/", self.current_index)
            n = self._walk_get(path)
            if n.is_dir and value:
                raise NotAFile(path, self.current_index)
        except Exception:
            self.stats["updateFail"] += 1
            raise
        self.stats["updateSuccess"] += 1
        if refresh:
            value = n.value or ""
        next_index = self.current_index + 1
        prev = self._prev(n)
        if not n.is_dir:
            n.value = value
            # etcd quirk kept on purpose: node.Write fails silently on a dir, so a dir's stored
            # modifiedIndex does not move although the event reports the new index.
            n.modified_index = next_index
        self._set_ttl(n, expire_ns)
        self._keep(n)
        exp, ttl = self._ttl_of(n, self._clock())
        view = NodeView(
            path, None if n.is_dir else value, n.is_dir, exp, ttl, None, next_index, n.created_index
        )
        e = Event("update", view, prev, next_index)
        self.current_index = next_index
        self._publish(e, refresh)
        return e

    @staticmethod
    def _compare_cause(n: Node, prev_value: str, prev_index: int) -> str | None:
        index_ok = prev_index == 0 or n.modified_index == prev_index
        value_ok = prev_value == "" or n.value == prev_value
        if index_ok and value_ok:
            return None
        if index_ok:
            return f"[{prev_value} != {n.value}]"
        if value_ok:
            return f"[{prev_index} != {n.modified_index}]"
        return f"[{prev_value} != {n.value}] [{prev_index} != {n.modified_index}]"

    def compare_and_swap(
        self, path: str, prev_value: str, prev_index: int, value: str, expire_ns: int | None, refresh: bool
    ) -> Event:
        try:
            if path in self.readonly:
                raise RootReadOnly("/", self.current_index)
            n = self._walk_get(path)
            if n.is_dir:
                raise NotAFile(path, self.current_index)
            cause = self._compare_cause(n, prev_value, prev_index)
            if cause is not None:
                raise CompareFailed(cause, self.current_index)
        except Exception:
            self.stats["compareAndSwapFail"] += 1
            raise
        self.stats["compareAndSwapSuccess"] += 1
        if refresh:
            value = n.value or ""
        self.current_index += 1
        prev = self._prev(n)
        n.value = value
        n.modified_index = self.current_index
        self._set_ttl(n, expire_ns)
        self._keep(n)
        exp, ttl = self._ttl_of(n, self._clock())
        view = NodeView(path, value, False, exp, ttl, None, self.current_index, n.created_index)
        e = Event("compareAndSwap", view, prev, self.current_index)
        self._publish(e, refresh)
        return e

    def delete(self, path: str, is_dir: bool, recursive: bool) -> Event:
        try:
            if path in self.readonly:
                raise RootReadOnly("/", self.current_index)
            if recursive:
                is_dir = True
            n = self._walk_get(path)
            if n.is_dir:
                assert n.children is not None
                if not is_dir:
                    raise NotAFile(n.path, self.current_index)
                if n.children and not recursive:
                    raise DirNotEmpty(n.path, self.current_index)
        except Exception:
            self.stats["deleteFail"] += 1
            raise
        self.stats["deleteSuccess"] += 1
        next_index = self.current_index + 1
        view = NodeView(path, None, n.is_dir, None, 0, None, next_index, n.created_index)
        e = Event("delete", view, self._prev(n), next_index)
        self._remove(n, True, True, self._removal_notifier(e))
        self.current_index = next_index
        self.hub.notify(e)
        return e

    def compare_and_delete(self, path: str, prev_value: str, prev_index: int) -> Event:
        try:
            n = self._walk_get(path)
            if n.is_dir:
                raise NotAFile(path, self.current_index)
            cause = self._compare_cause(n, prev_value, prev_index)
            if cause is not None:
                raise CompareFailed(cause, self.current_index)
        except Exception:
            self.stats["compareAndDeleteFail"] += 1
            raise
        self.stats["compareAndDeleteSuccess"] += 1
        self.current_index += 1
        view = NodeView(path, None, False, None, 0, None, self.current_index, n.created_index)
        e = Event("compareAndDelete", view, self._prev(n), self.current_index)
        self._remove(n, False, False, self._removal_notifier(e))
        self.hub.notify(e)
        return e

    def delete_expired(self, cutoff_ns: int) -> list[Event]:
        """Expire every node whose expiration is at or before cutoff_ns (etcd DeleteExpiredKeys)."""
        events: list[Event] = []
        while self._ttl_keys:
            expire_ns, path = self._ttl_keys[0]
            if expire_ns > cutoff_ns:
                break
            n = self._walk_get(path)
            self.current_index += 1
            view = NodeView(path, None, n.is_dir, None, 0, None, self.current_index, n.created_index)
            e = Event("expire", view, self._prev(n), self.current_index)
            self._remove(n, True, True, self._removal_notifier(e))
            self.stats["expireCount"] += 1
            self.hub.notify(e)
            events.append(e)
        return events

    def has_ttl_keys(self) -> bool:
        return bool(self._ttl_keys)

    def _remove(self, n: Node, is_dir: bool, recursive: bool, callback: Callable[[str], None] | None) -> None:
        """Remove n (and its subtree), calling back for every removed path, children first."""
        if n.children is not None:
            for child in list(n.children.values()):
                self._remove(child, True, True, callback)
        parent = n.parent
        if parent is not None and parent.children is not None and parent.children.get(n.name) is n:
            del parent.children[n.name]
            del self._rows[n.path]
            if callback is not None:
                callback(n.path)
            if n.expire_ns is not None:
                self._ttl_keys.discard((n.expire_ns, n.path))

    def _removal_notifier(self, e: Event) -> Callable[[str], None]:
        # etcd: watchers on every removed path hear the removal event, even non-recursive ones
        return lambda removed_path: self.hub.notify_watchers(e, removed_path, True)

    def _publish(self, e: Event, refresh: bool) -> None:
        if refresh:
            e.refresh = True
            self.hub.add(e)
        else:
            self.hub.notify(e)

    # ---- watching --------------------------------------------------------------------------

    def watch(self, path: str, recursive: bool, stream: bool, since_index: int) -> Watcher:
        if since_index == 0:
            since_index = self.current_index + 1
        return self.hub.watch(path, recursive, stream, since_index, self.current_index)

    # ---- snapshot --------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        """Deterministic serialisable form: nodes in the order they were made (parents first,
        each directory's children in their order; the log decides it, so every member has the
        same, and a restore keeps it), history, index.

        The nodes are the kept rows, not a walk of the tree: a forked snapshot child that walked
        the nodes wrote the reference count of every node, path and value it read, so the kernel
        copied nearly every page of the heap for it (~138,000 at 900,000 keys, ~1 s of CPU);
        listing the rows touches only the rows' own pages (~0.25 s)."""
        return {
            "index": self.current_index,
            "nodes": list(self._rows.values()),
            "history": [e.to_obj() for e in self.history.events],
        }

    def load_obj(self, o: dict[str, Any]) -> None:
        """Replace the whole state (restore from snapshot). Live watchers are dropped."""
        for group in list(self.hub.watchers.values()):
            for w in list(group):
                w.remove()
        self.root = Node("/", None, 0, None, None)
        self._ttl_keys = SortedList()
        # Nodes come parents first; only directories can be parents. (A restart spends its
        # time here: ~100k nodes for 100k keys, so the loop does only what it must.)
        dirs: dict[str, Node] = {"/": self.root, "": self.root}
        ttl_keys = self._ttl_keys
        nodes = o["nodes"]
        # Each loaded list is its node's row until the node changes (never mutated); built in
        # one C-level pass (a tuple per node, made in the loop below, added ~50% to the load).
        self._rows = dict(zip(map(itemgetter(0), nodes), nodes, strict=True))
        for path, value, created, modified, expire_ns in nodes:
            dir_path, _, name = path.rpartition("/")
            parent = dirs[dir_path]
            n = Node(path, parent, created, value, expire_ns)
            n.modified_index = modified
            parent.children[name] = n  # type: ignore[index]  # a directory: children is a dict
            if value is None:
                dirs[path] = n
            if expire_ns is not None:
                ttl_keys.add((expire_ns, path))
        self.current_index = o["index"]
        self.history = EventHistory()
        self.hub.history = self.history
        for eo in o["history"]:
            self.history.add(Event.from_obj(eo))


STATS_FIELDS = (
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
)
