"""V3Store: the whole deterministic v3 state (MVCC keys, leases, watchers) behind one facade.

The Applier calls the mutating methods in log order; the gateway calls `range` and `watch`
directly for reads. Every method either completes or raises a V3Error having changed nothing.

Invariants:
- `current_revision` starts at 1; put, a delete that deletes something, a txn that writes and a
  lease revoke that deletes keys each add exactly one revision (etcd counts the same way);
- watchers are fed inside the write that produced the events, before the method returns;
- `to_obj()` is a deterministic function of the state (no watchers, no clocks), and
  `load_obj(to_obj())` gives a store that answers every read and hash identically.

Must not import raft, asyncio, time or any HTTP package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from store.errors import V3EmptyWatcherRange, V3KeyNotFound, V3LeaseNotFound
from store.jsonstream import materialize
from store.v3.kv import MvccStore, Record
from store.v3.lease import Lessor
from store.v3.txn import (
    check_txn,
    execute_delete,
    execute_put,
    execute_range,
    execute_txn,
    gte_range,
    txn_path,
)
from store.v3.watch import MvccWatcher, WatcherGroup
from store.v3types import (
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    LeaseInfo,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)

SNAPSHOT_FORMAT = 1


class V3Store:
    def __init__(self) -> None:
        self.lessor = Lessor()
        self.watchers = WatcherGroup()
        self.kv = MvccStore(self.lessor, self.watchers.notify)

    # ---- revisions -------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self.kv.current_revision

    @property
    def compact_revision(self) -> int:
        return self.kv.compact_revision

    # ---- KV --------------------------------------------------------------------------------

    def range(self, req: RangeRequest) -> RangeResponse:
        """Read at `req.revision` (<= 0: current). Raises V3Compacted / V3FutureRevision.
        The response's `revision` is the current one, also for a read in the past."""
        return execute_range(self.kv.txn(), req)

    def put(self, req: PutRequest) -> PutResponse:
        """One new revision. Raises V3LeaseNotFound, then V3KeyNotFound (ignore_* on a missing
        key), in etcd's order for a put outside a txn."""
        t = self.kv.txn()
        if req.lease and self.lessor.lookup(req.lease) is None:
            raise V3LeaseNotFound()
        if (req.ignore_value or req.ignore_lease) and t.get(req.key) is None:
            raise V3KeyNotFound()
        resp = execute_put(t, req)
        t.end()
        return resp

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        """A new revision only if something was deleted; `revision` is the one after."""
        t = self.kv.txn()
        resp = execute_delete(t, req)
        t.end()
        return resp

    def txn(self, req: TxnRequest) -> TxnResponse:
        """Atomic: compares on the state before, then checks, then one revision for all writes
        (nested txns included). Raises V3LeaseNotFound / V3KeyNotFound / V3Compacted /
        V3FutureRevision before writing anything."""
        t = self.kv.txn()
        path = txn_path(t, req)
        check_txn(t, req, path, self._lease_exists)
        resp = execute_txn(t, req, iter(path))
        rev = t.end()
        return replace(resp, revision=rev)

    def compact(self, revision: int) -> None:
        """Raises V3Compacted (revision <= last compaction, 0 included once one happened) or
        V3FutureRevision (revision > current). The compacted revision stays readable."""
        self.kv.compact(revision)

    def hash(self) -> int:
        return self.kv.hash()

    def db_size(self) -> int:
        """Estimated backend file size: grows with writes, shrinks only in defragment()."""
        return self.kv.db_size()

    def db_size_in_use(self) -> int:
        return self.kv.db_size_in_use()

    def defragment(self) -> None:
        self.kv.defragment()

    # ---- leases ----------------------------------------------------------------------------

    def _lease_exists(self, lease_id: int) -> bool:
        return self.lessor.lookup(lease_id) is not None

    def lease_grant(self, lease_id: int, ttl_s: int) -> LeaseInfo:
        """Raises V3LeaseNotFound (id 0), V3LeaseTTLTooLarge, V3LeaseExists. The TTL is taken
        as given: raising it to the minimum is the server's job."""
        return self.lessor.grant(lease_id, ttl_s).info()

    def lease_revoke(self, lease_id: int) -> int:
        """Delete the lease's keys in one revision (none if it has no keys), in key order as
        etcd's lessor.Revoke does; returns the revision after. Raises V3LeaseNotFound."""
        lease = self.lessor.lookup(lease_id)
        if lease is None:
            raise V3LeaseNotFound()
        t = self.kv.txn()
        for key in sorted(lease.keys):
            t.delete_range(key, None)
        self.lessor.remove(lease_id)
        return t.end()

    def lease_get(self, lease_id: int) -> LeaseInfo | None:
        lease = self.lessor.lookup(lease_id)
        return None if lease is None else lease.info()

    def leases(self) -> list[int]:
        return self.lessor.ids()

    # ---- watch -----------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
    ) -> MvccWatcher:
        """Register a watcher; history from `start_revision` is queued before this returns.

        start_revision 0 means "from the next revision" (etcd#11496 semantics); a future one
        waits for it. Compacted history → the watcher comes back unregistered with `compacted`
        set to the compaction revision. Raises V3EmptyWatcherRange when range_end <= key.
        """
        # etcd v3rpc watch server: an empty key means "\0"; range_end "\0" means "from key".
        if key == b"":
            key = b"\0"
        end = gte_range(range_end)
        if end and end <= key:
            raise V3EmptyWatcherRange()
        cur = self.kv.current_revision
        start = cur + 1 if start_revision == 0 else start_revision
        w = MvccWatcher(self.watchers, key, end, start, prev_kv=prev_kv, no_put=no_put, no_delete=no_delete)
        if start <= cur:
            compact = self.kv.compact_main
            if start < compact and compact > 0:
                w.compacted = compact
                w.cancel()
                return w
            self._replay(w)
        self.watchers.add(w)
        return w

    def _replay(self, w: MvccWatcher) -> None:
        """Queue every stored revision from w.next_rev on (etcd's unsynced catch-up)."""
        for main, records in self.kv.history(max(w.next_rev, 1)):
            events = [self._history_event(main, rec, w.prev_kv) for rec in records if w.matches(rec.kv.key)]
            w.deliver(main, events)

    def _history_event(self, main: int, rec: Record, with_prev: bool) -> Event:
        kv = rec.kv
        prev = None
        # etcd's watch server reads prev_kv at mod_revision-1; below the compaction that read
        # fails and the event goes out without prev_kv.
        if with_prev and main - 1 >= self.kv.compact_main:
            prev = self.kv.get(kv.key, main - 1)
        return Event(EventType.DELETE if rec.tombstone else EventType.PUT, kv, prev)

    # ---- snapshot --------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        return cast(dict[str, Any], materialize(self.copy_state()()))

    def copy_state(self) -> Callable[[], dict[str, Any]]:
        """to_obj() in two steps, as MvccStore.copy_state: copied now, built (its records a
        Streamed) when called."""
        kv = self.kv.copy_state()
        leases = self.lessor.to_obj()
        return lambda: {"format": SNAPSHOT_FORMAT, "kv": kv(), "leases": leases}

    def load_obj(self, o: dict[str, Any]) -> None:
        """Replace the state. Live watchers survive, as etcd's watchable store keeps them across
        a snapshot restore: each catches up from its next revision, or is cancelled with
        `compacted` (and woken) when the new state no longer has that history."""
        if o.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown v3 snapshot format {o.get('format')!r}")
        self.lessor.load_obj(o["leases"])
        self.kv.load_obj(o["kv"])
        # Lease attachments are not stored separately: they are the live keys' `lease` fields.
        for ki in self.kv.index.all():
            g = ki.live()
            if g is not None:
                lease = self.kv.record(g.revs[-1]).kv.lease
                if lease:
                    self.lessor.attach(lease, ki.key)
        cur = self.kv.current_revision
        compact = self.kv.compact_main
        for w in self.watchers.all():
            if w.next_rev > cur:
                continue
            if w.next_rev < compact:
                w.compacted = compact
                w.cancel()
                w.wake()
            else:
                self._replay(w)
