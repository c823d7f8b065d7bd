"""Hypothesis stateful test: V3Store against a plain model, key → list of versions.

The model keeps, per key, every (revision, KeyValue or None for a delete) it ever had, and per
revision the changes in order; range at a revision, txns, compaction and watch replay are
re-stated from those lists in the simplest way. Every step compares answers and errors; the
invariants compare the whole state, a watcher registered at the start, and a snapshot copy.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from store.errors import V3Compacted, V3Error, V3FutureRevision
from store.v3.state import V3Store
from store.v3.watch import MvccWatcher
from store.v3types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)

KEYS = (b"a", b"b", b"b0", b"c")
keys = st.sampled_from(KEYS)
values = st.sampled_from((b"", b"x", b"y"))
# (key, range_end) intervals: single keys, prefixes, from-key, everything, empty.
intervals = st.one_of(
    keys.map(lambda k: (k, b"")),
    st.sampled_from(
        [(b"b", b"c"), (b"a", b"\0"), (b"b0", b"\0"), (b"\0", b"\0"), (b"c", b"a"), (b"a", b"b0")]
    ),
)


def in_interval(k: bytes, key: bytes, end: bytes) -> bool:
    if end == b"":
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


class Model:
    def __init__(self) -> None:
        self.versions: dict[bytes, list[tuple[int, KeyValue | None]]] = {}
        self.changes: dict[int, list[tuple[bytes, KeyValue | None]]] = {}
        self.rev = 1
        self.compact_main = -1

    def at(self, rev: int) -> dict[bytes, KeyValue]:
        out: dict[bytes, KeyValue] = {}
        for k, vs in sorted(self.versions.items()):
            live = [kv for r, kv in vs if r <= rev]
            if live and live[-1] is not None:
                out[k] = live[-1]
        return out

    def range(
        self, key: bytes, end: bytes, rev: int, pending: dict[bytes, KeyValue | None] | None = None
    ) -> list[KeyValue]:
        state = self.at(rev)
        for k, kv in (pending or {}).items():
            if kv is None:
                state.pop(k, None)
            else:
                state[k] = kv
        return [state[k] for k in sorted(state) if in_interval(k, key, end)]

    def write(self, ops: list[tuple[str, bytes, bytes]]) -> dict[bytes, KeyValue | None]:
        """Apply ("put", key, value) / ("del", key, end) at one new revision, in order."""
        rev = self.rev + 1
        pending: dict[bytes, KeyValue | None] = {}
        log: list[tuple[bytes, KeyValue | None]] = []
        for kind, key, arg in ops:
            if kind == "put":
                cur = self.range(key, b"", self.rev, pending)
                prev = cur[0] if cur else None
                kv = KeyValue(
                    key,
                    prev.create_revision if prev else rev,
                    rev,
                    (prev.version if prev else 0) + 1,
                    arg,
                )
                pending[key] = kv
                log.append((key, kv))
            else:
                for gone in self.range(key, arg, self.rev, pending):
                    pending[gone.key] = None
                    log.append((gone.key, None))
        if log:
            self.rev = rev
            self.changes[rev] = log
            for k, change in log:
                self.versions.setdefault(k, []).append((rev, change))
        return pending

    def events(self, start: int) -> list[tuple[int, list[tuple[EventType, bytes, bytes]]]]:
        return [
            (rev, [(EventType.PUT if kv else EventType.DELETE, k, kv.value if kv else b"") for k, kv in log])
            for rev, log in sorted(self.changes.items())
            if rev >= start
        ]


def observed(w: MvccWatcher) -> list[tuple[int, list[tuple[EventType, bytes, bytes]]]]:
    return [(rev, [(e.type, e.kv.key, e.kv.value) for e in evs]) for rev, evs in w.batches]


class V3Machine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = V3Store()
        self.m = Model()
        self.everything: MvccWatcher | None = None

    @initialize()
    def start_watching(self) -> None:
        self.everything = self.s.watch(b"", b"\0", 0, prev_kv=False, no_put=False, no_delete=False)

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        r = self.s.put(PutRequest(key, value))
        self.m.write([("put", key, value)])
        assert r.revision == self.m.rev

    @rule(iv=intervals)
    def delete(self, iv: tuple[bytes, bytes]) -> None:
        key, end = iv
        expected = self.m.range(key, end, self.m.rev)
        r = self.s.delete_range(DeleteRangeRequest(key, end, prev_kv=True))
        self.m.write([("del", key, end)])
        assert (r.revision, r.deleted, list(r.prev_kvs)) == (self.m.rev, len(expected), expected)

    @rule(
        cmp_key=keys,
        cmp_version=st.integers(0, 3),
        result=st.sampled_from(list(CompareResult)),
        puts=st.dictionaries(keys, values, max_size=3),
        dels=st.lists(intervals, max_size=2),
        read=intervals,
    )
    def txn(
        self,
        cmp_key: bytes,
        cmp_version: int,
        result: CompareResult,
        puts: dict[bytes, bytes],
        dels: list[tuple[bytes, bytes]],
        read: tuple[bytes, bytes],
    ) -> None:
        # The gateway's duplicate-key rule: no put of a key a delete in the same branch covers.
        puts = {k: v for k, v in puts.items() if not any(in_interval(k, a, b) for a, b in dels)}
        cur = self.m.range(cmp_key, b"", self.m.rev)
        version = cur[0].version if cur else 0
        ok = {
            CompareResult.EQUAL: version == cmp_version,
            CompareResult.GREATER: version > cmp_version,
            CompareResult.LESS: version < cmp_version,
            CompareResult.NOT_EQUAL: version != cmp_version,
        }[result]
        model_ops: list[tuple[str, bytes, bytes]] = [("del", a, b) for a, b in dels]
        model_ops += [("put", k, v) for k, v in puts.items()]
        ops = [RequestOp(request_delete_range=DeleteRangeRequest(a, b)) for a, b in dels]
        ops += [RequestOp(request_put=PutRequest(k, v)) for k, v in puts.items()]
        ops.append(RequestOp(request_range=RangeRequest(read[0], read[1])))
        # The writes go in the success branch, directly or nested one level down.
        success = tuple(ops) if len(ops) % 2 else (RequestOp(request_txn=TxnRequest(success=tuple(ops))),)
        req = TxnRequest(
            compare=(Compare(result, CompareTarget.VERSION, cmp_key, version=cmp_version),),
            success=success,
            failure=(RequestOp(request_range=RangeRequest(read[0], read[1])),),
        )
        r = self.s.txn(req)
        assert r.succeeded is ok
        if ok:
            self.m.write(model_ops)
        assert r.revision == self.m.rev
        last = r.responses[-1]
        if last.response_txn is not None:
            last = last.response_txn.responses[-1]
        assert last.response_range is not None
        assert list(last.response_range.kvs) == self.m.range(read[0], read[1], self.m.rev)

    @rule(back=st.integers(-1, 6))
    def compact(self, back: int) -> None:
        rev = self.m.rev - back
        try:
            self.s.compact(rev)
        except V3Error as err:
            expected: type[V3Error] = V3Compacted if rev <= self.m.compact_main else V3FutureRevision
            assert type(err) is expected
            assert rev <= self.m.compact_main or rev > self.m.rev
        else:
            assert self.m.compact_main < rev <= self.m.rev
            self.m.compact_main = rev

    @rule(iv=intervals, back=st.integers(-2, 8), limit=st.integers(-1, 3))
    def range_at(self, iv: tuple[bytes, bytes], back: int, limit: int) -> None:
        rev = self.m.rev - back
        req = RangeRequest(iv[0], iv[1], revision=rev, limit=limit)
        at = self.m.rev if rev <= 0 else rev
        try:
            r = self.s.range(req)
        except V3FutureRevision:
            assert rev > self.m.rev
        except V3Compacted:
            assert 0 < rev < self.m.compact_main
        else:
            assert rev <= self.m.rev and not (0 < rev < self.m.compact_main)
            expected = self.m.range(iv[0], iv[1], at)
            shown = expected[:limit] if limit > 0 else expected
            assert (list(r.kvs), r.count, r.more, r.revision) == (
                shown,
                len(expected),
                len(shown) < len(expected),
                self.m.rev,
            )

    @rule(iv=intervals, back=st.integers(0, 8))
    def watch_from(self, iv: tuple[bytes, bytes], back: int) -> None:
        start = max(self.m.rev - back, 1)
        key, end = iv
        if end not in (b"", b"\0") and end <= key:
            return
        w = self.s.watch(key, end, start, prev_kv=False, no_put=False, no_delete=False)
        w.cancel()
        if start < self.m.compact_main:
            assert w.compacted == self.m.compact_main
            return
        assert w.compacted == 0
        if start == self.m.compact_main:
            return  # etcd keeps only part of the compaction revision's history
        expected = [
            (rev, evs)
            for rev, all_evs in self.m.events(start)
            if (evs := [e for e in all_evs if in_interval(e[1], key or b"\0", end)])
        ]
        assert observed(w) == expected

    @invariant()
    def same_state(self) -> None:
        assert self.s.current_revision == self.m.rev
        assert self.s.compact_revision == max(self.m.compact_main, 0)
        assert list(self.s.range(RangeRequest(b"\0", b"\0")).kvs) == self.m.range(b"\0", b"\0", self.m.rev)

    @invariant()
    def live_watcher_saw_every_change(self) -> None:
        if self.everything is not None:
            assert observed(self.everything) == self.m.events(2)
            for _, evs in self.everything.batches:
                for e in evs:
                    assert e == Event(e.type, e.kv) and (
                        e.type == EventType.PUT or e.kv == KeyValue(e.kv.key, mod_revision=e.kv.mod_revision)
                    )

    @invariant()
    def snapshot_copy_answers_the_same(self) -> None:
        copy = V3Store()
        copy.load_obj(self.s.to_obj())
        assert copy.hash() == self.s.hash()
        lo = max(self.m.compact_main, 1)
        for rev in range(lo, self.m.rev + 1):
            req = RangeRequest(b"\0", b"\0", revision=rev)
            assert copy.range(req) == self.s.range(req)


V3Machine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestV3StoreAgainstVersionListModel = V3Machine.TestCase
