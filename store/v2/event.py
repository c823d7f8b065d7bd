"""v2 events and node snapshots: what the v2 store hands to the API layer and to watchers.

Invariant: a NodeView is a frozen copy taken when the event was built (so the `ttl` of an event
replayed from history is the one it had then, as in etcd). Keys are internal paths (`/1/foo`);
the API layer strips the namespace. Must not import anything outside the stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["get", "set", "create", "update", "delete", "compareAndSwap", "compareAndDelete", "expire"]


@dataclass(slots=True)
class NodeView:
    key: str
    value: str | None = None  # None for dirs and for the node of delete-like events
    dir: bool = False
    expire_ns: int | None = None
    ttl: int = 0
    nodes: list[NodeView] | None = None  # only for listed dirs; None when not listed or empty
    modified_index: int = 0
    created_index: int = 0

    def to_obj(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": self.value,
            "dir": self.dir,
            "expire_ns": self.expire_ns,
            "ttl": self.ttl,
            "nodes": None if self.nodes is None else [n.to_obj() for n in self.nodes],
            "modified_index": self.modified_index,
            "created_index": self.created_index,
        }

    @classmethod
    def from_obj(cls, o: dict[str, object]) -> NodeView:
        nodes = o.get("nodes")
        return cls(
            key=str(o["key"]),
            value=o["value"] if o["value"] is None else str(o["value"]),
            dir=bool(o["dir"]),
            expire_ns=o["expire_ns"] if o["expire_ns"] is None else int(o["expire_ns"]),  # type: ignore[call-overload]
            ttl=int(o["ttl"]),  # type: ignore[call-overload]
            nodes=None if nodes is None else [cls.from_obj(n) for n in nodes],  # type: ignore[attr-defined]
            modified_index=int(o["modified_index"]),  # type: ignore[call-overload]
            created_index=int(o["created_index"]),  # type: ignore[call-overload]
        )


@dataclass(slots=True)
class Event:
    action: Action
    node: NodeView
    prev_node: NodeView | None = None
    etcd_index: int = 0  # store index when the answer was built (X-Etcd-Index)
    refresh: bool = False  # refresh events are kept in history but skipped by scans and watchers

    @property
    def index(self) -> int:
        return self.node.modified_index

    def to_obj(self) -> dict[str, object]:
        return {
            "action": self.action,
            "node": self.node.to_obj(),
            "prev_node": None if self.prev_node is None else self.prev_node.to_obj(),
            "etcd_index": self.etcd_index,
            "refresh": self.refresh,
        }

    @classmethod
    def from_obj(cls, o: dict[str, object]) -> Event:
        prev = o["prev_node"]
        return cls(
            action=o["action"],  # type: ignore[arg-type]
            node=NodeView.from_obj(o["node"]),  # type: ignore[arg-type]
            prev_node=None if prev is None else NodeView.from_obj(prev),  # type: ignore[arg-type]
            etcd_index=int(o["etcd_index"]),  # type: ignore[call-overload]
            refresh=bool(o["refresh"]),
        )
