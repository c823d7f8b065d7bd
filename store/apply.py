"""The Applier: the only writer of store state, fed committed log entries in order.

Invariant: apply is a pure function of (state, entry); a result is either an Event or the
StoreError the client will see (errors are results, not failures of apply). `snapshot()` and
`restore()` round-trip the whole state deterministically. Must not import raft, asyncio or time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

import orjson

from store.commands import (
    Command,
    Noop,
    V2CompareAndDelete,
    V2CompareAndSwap,
    V2Create,
    V2Delete,
    V2QuorumGet,
    V2Set,
    V2Sync,
    V2Update,
)
from store.errors import StoreError
from store.v2.event import Event
from store.v2.tree import V2Store

Result = Event | StoreError | None

SNAPSHOT_FORMAT = 1


class Applier:
    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.v2 = V2Store(clock)
        self.applied_index = 0

    def apply(self, index: int, cmd: Command) -> Result:
        self.applied_index = index
        v2 = self.v2
        try:
            match cmd:
                case V2Set():
                    return v2.set(cmd.path, cmd.dir, cmd.value, cmd.expire_ns, cmd.refresh)
                case V2Create():
                    return v2.create(cmd.path, cmd.dir, cmd.value, cmd.unique, cmd.expire_ns)
                case V2Update():
                    return v2.update(cmd.path, cmd.value, cmd.expire_ns, cmd.refresh)
                case V2CompareAndSwap():
                    return v2.compare_and_swap(
                        cmd.path, cmd.prev_value, cmd.prev_index, cmd.value, cmd.expire_ns, cmd.refresh
                    )
                case V2Delete():
                    return v2.delete(cmd.path, cmd.dir, cmd.recursive)
                case V2CompareAndDelete():
                    return v2.compare_and_delete(cmd.path, cmd.prev_value, cmd.prev_index)
                case V2QuorumGet():
                    return v2.get(cmd.path, cmd.recursive, cmd.sorted)
                case V2Sync():
                    v2.delete_expired(cmd.now_ns)
                    return None
                case Noop():
                    return None
                case _:
                    assert_never(cmd)
        except StoreError as err:
            return err

    def snapshot(self) -> bytes:
        state: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "applied_index": self.applied_index,
            "v2": self.v2.to_obj(),
        }
        return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)

    def restore(self, data: bytes) -> None:
        state = orjson.loads(data)
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {state.get('format')!r}")
        self.v2.load_obj(state["v2"])
        self.applied_index = state["applied_index"]
