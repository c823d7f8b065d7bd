"""The Applier: the only writer of store state, fed committed log entries in order.

Invariant: apply is a pure function of (state, entry); a result is either a value (a v2 Event,
a v3 response, LeaseInfo, a revision) or the StoreError / V3Error the client will see (errors
are results, not failures of apply, and leave the state unchanged). `snapshot()` and
`restore()` round-trip the whole state deterministically. Must not import raft, asyncio or time.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
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
    V3Alarm,
    V3Compact,
    V3DeleteRange,
    V3LeaseGrant,
    V3LeaseRevoke,
    V3Put,
    V3Txn,
)
from store.errors import MembershipError, StoreError, V3Error, V3NoSpace
from store.jsonstream import Streamed, json_chunks
from store.v2.event import Event
from store.v2.tree import V2Store
from store.v3.state import V3Store
from store.v3types import DeleteRangeResponse, LeaseInfo, PutResponse, TxnRequest, TxnResponse

ALARM_GET, ALARM_ACTIVATE, ALARM_DEACTIVATE = 0, 1, 2
ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT = 0, 1, 2
Alarms = tuple[tuple[int, int], ...]  # (member_id, alarm type), sorted


def txn_has_puts(req: TxnRequest) -> bool:
    """etcd quota Cost(txn) > 0: the txn (or a nested one) contains a put."""
    for op in (*req.success, *req.failure):
        if op.request_put is not None:
            return True
        if op.request_txn is not None and txn_has_puts(op.request_txn):
            return True
    return False


# V3Compact and V3LeaseRevoke give the store revision after apply (the response header's).
V3Result = PutResponse | DeleteRangeResponse | TxnResponse | LeaseInfo | int | Alarms
Result = Event | StoreError | V3Result | V3Error | MembershipError | None

SNAPSHOT_FORMAT = 1


class Applier:
    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.v2 = V2Store(clock)
        self.v3 = V3Store()
        self.alarms: set[tuple[int, int]] = set()
        self.applied_index = 0

    def nospace(self) -> bool:
        return any(alarm == ALARM_NOSPACE for _, alarm in self.alarms)

    def apply(self, index: int, cmd: Command) -> Result:
        self.applied_index = index
        v2, v3 = self.v2, self.v3
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
                case V3Put():
                    # etcd applierV3Capped: with NOSPACE raised, writes that grow the db are refused
                    if self.nospace():
                        raise V3NoSpace()
                    return v3.put(cmd.req)
                case V3DeleteRange():
                    return v3.delete_range(cmd.req)
                case V3Txn():
                    if self.nospace() and txn_has_puts(cmd.req):
                        raise V3NoSpace()
                    return v3.txn(cmd.req)
                case V3Compact():
                    v3.compact(cmd.revision)
                    return v3.current_revision
                case V3LeaseGrant():
                    if self.nospace():
                        raise V3NoSpace()
                    return v3.lease_grant(cmd.lease_id, cmd.ttl_s)
                case V3LeaseRevoke():
                    return v3.lease_revoke(cmd.lease_id)
                case V3Alarm():
                    return self._alarm(cmd)
                case _:
                    assert_never(cmd)
        except (StoreError, V3Error) as err:
            return err

    def _alarm(self, cmd: V3Alarm) -> Alarms:
        """etcd applierV3backend.Alarm: GET lists, ACTIVATE/DEACTIVATE answer the changed alarm."""
        if cmd.action == ALARM_ACTIVATE and cmd.alarm != ALARM_NONE:
            entry = (cmd.member_id, cmd.alarm)
            self.alarms.add(entry)  # etcd answers an already active alarm too
            return (entry,)
        if cmd.action == ALARM_DEACTIVATE:
            entry = (cmd.member_id, cmd.alarm)
            if entry not in self.alarms:
                return ()
            self.alarms.discard(entry)
            return (entry,)
        # GET: all alarms, or those of one type
        return tuple(sorted(a for a in self.alarms if cmd.alarm in (ALARM_NONE, a[1])))

    def snapshot(self) -> bytes:
        return b"".join(self.take_snapshot()())

    def take_snapshot(self) -> Callable[[], Iterator[bytes | memoryview]]:
        """The state now, as a function that encodes it in pieces (store/jsonstream.py; joined,
        they are snapshot()): the state is copied (immutable values in fresh lists) so the
        encoding may run later or on another thread.

        The copy is a list of the v2 tree's kept rows and ~1 tuple per v3 record, none in a
        cycle: no collection runs while it is made (one that did took ~170 of 260 ms at 700,000
        keys, all on the event loop)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            v2 = self.v2.to_obj()
            v3 = self.v3.copy_state()  # its base64 form is built with the encoding
        finally:
            if collecting:
                gc.enable()
        v2["nodes"] = Streamed(v2["nodes"])
        state: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "applied_index": self.applied_index,
            "v2": v2,
            "alarms": sorted(self.alarms),
        }
        return lambda: json_chunks({**state, "v3": v3()})

    def restore(self, data: bytes) -> None:
        state = orjson.loads(data)
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {state.get('format')!r}")
        self.v2.load_obj(state["v2"])
        # Snapshots written before v3 existed have no "v3": their v3 state is the empty store.
        v3 = state.get("v3")
        if v3 is None:
            v3 = V3Store().to_obj()
        self.v3.load_obj(v3)
        self.alarms = {(int(m), int(a)) for m, a in state.get("alarms", [])}
        self.applied_index = state["applied_index"]
