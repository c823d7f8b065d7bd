"""Seeded random v3 gateway operation sequences, sent in lockstep to a fresh etcd and a fresh implementation.

Each op is one HTTP exchange with the v3 JSON gateway: puts (prev_kv, ignore_value,
ignore_lease), ranges (single key, prefix, from-key, intervals, all keys; limit, sort
order/target, keys_only, count_only, revision time travel, min/max mod/create revision filters,
serializable), deleteranges (prev_kv), txns (compares on VALUE/VERSION/CREATE/MOD/LEASE over
existing and missing keys and ranges, nested txns), compactions (and reads/watches below the
compacted revision), bad input (empty key, bad base64, wrong JSON types, unknown fields,
bad enums, over-long and duplicate-key txns, non-JSON bodies) and watches from a past revision
(``/v3/watch`` with a create_request and start_revision: the created message and the catch-up
batch -- or the compaction cancel -- are read, then the connection is closed).

Every answer is compared: status, Content-Type, Grpc-Metadata-Content-Type, Trailer, framing
(chunked or not, lines per chunk on watches; not the HTTP trailers themselves, see
``NOT_COMPARED``) and the normalised body exactly
(tests/support/normalize.py; cluster/member ids and raft term are masked, revisions are not:
both servers start fresh and get the same ops, so their revisions must agree).  The first
difference fails the seed with the seed, the op number, the request and both answers;
``pytest tests/diff/test_random_v3.py --seed N`` replays one seed.  Both transcripts are kept in
the test's tmp dir.

Op generation needs plausible targets (current values, versions, revisions): after every op the
harness reads the whole key space from the reference etcd only (an unrecorded serializable
range: reads do not move the revision), never from the implementation.

The key space has fewer than 13 keys, so no range returns more than 12 kvs: Go's ``sort.Sort``
is an insertion sort (stable) for such small inputs, so ties under VERSION/CREATE/MOD/VALUE
sorting have one well-defined order.  No leases are granted (their IDs are server-chosen).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.diff import record as _record
from tests.support.etcd_ref import ServerFactory
from tests.support.normalize import (
    Difference,
    NormContext,
    compare_responses,
    normalize_exchange,
)
from tests.support.procs import ServerProc

record: Any = _record  # spec tooling copied verbatim, untyped

pytestmark = [pytest.mark.diff, pytest.mark.slow]

SEEDS = list(range(1, 9))
OPS = 120

# fewer than 13 keys in total (see the module docstring); bytes, sent base64-encoded
KEYS = [b"k/a", b"k/b", b"k/c", b"k/d", b"k/e", b"k/a/x", b"k/\xff", b"k0", b"j", b"z"]
MISSING = [b"k/zz", b"k/", b"m", b"a"]  # read/compare/delete targets only: never written
VALUES = [b"", b"v", b"1", b"2", b"10", b"\x00\xff", b"two words", b"x" * 20]
INTERVALS = [  # (key, range_end)
    (b"k/", b"k0"),  # prefix k/
    (b"k/b", b"k/d"),
    (b"k/c", b"\x00"),  # from key
    (b"\x00", b"\x00"),  # every key
    (b"a", b"k"),
    (b"k/a", b"k/a0"),  # k/a and everything under k/a/
]
SORT_ORDERS: list[object] = ["NONE", "ASCEND", "DESCEND", 1, 2]
SORT_TARGETS: list[object] = ["KEY", "VERSION", "CREATE", "MOD", "VALUE", 3]
CMP_TARGETS = ["VALUE", "VERSION", "CREATE", "MOD"]
CMP_RESULTS = ["EQUAL", "NOT_EQUAL", "GREATER", "LESS"]

COMPARED_HEADERS = ("content-type", "grpc-metadata-content-type", "trailer")
# Parts of the normalised answer this test leaves out, with the reason.  (The golden replay,
# tests/diff/test_golden_v3.py, compares them, so a difference there is still seen and listed.)
NOT_COMPARED: dict[str, str] = {
    "framing.trailers": (
        "HTTP trailers (etcd sends Grpc-Trailer-Content-Type after every error body): a transport "
        "detail checked by the golden replay; this test is about semantics (status, body, framing)"
    ),
}

REQUEST_TIMEOUT = 5.0
WATCH_TIMEOUT = 3.0  # a watch op expects 2 lines; the catch-up batch comes within ~100 ms
PROBE_TIMEOUT = 5.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("seed")
        seeds = [chosen] if chosen is not None else SEEDS
        metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds])


def b64(b: bytes | str) -> str:
    return base64.b64encode(b.encode() if isinstance(b, str) else b).decode()


# ---------------------------------------------------------------- ops


@dataclass
class Op:
    path: str
    body: dict[str, Any] | None = None  # sent as compact JSON
    raw: str | None = None  # sent verbatim instead (bad JSON)
    note: str = ""
    max_lines: int | None = None
    timeout: float = REQUEST_TIMEOUT
    compact_to: int | None = None  # a compaction: the revision asked for

    def describe(self, limit: int = 400) -> str:
        text = self.raw if self.raw is not None else json.dumps(self.body, separators=(",", ":"))
        if len(text) > limit:
            text = text[:limit] + f"...({len(text)} chars)"
        n = f"   # {self.note}" if self.note else ""
        return f"POST {self.path} {text}{n}"


@dataclass
class Model:
    """What the reference etcd says exists: used to pick plausible targets, never compared."""

    kvs: dict[bytes, dict[str, Any]] = field(default_factory=dict)  # key -> kv (JSON from etcd)
    rev: int = 1
    compact: int = 0  # last successful compaction revision

    def learn(self, op: Op, status: int | None) -> None:
        if op.compact_to is not None and status == 200:
            self.compact = max(self.compact, op.compact_to)

    def refresh(self, etcd: ServerProc) -> None:
        got, why = post_json(
            etcd.client_port,
            "/v3/kv/range",
            {"key": b64(b"\x00"), "range_end": b64(b"\x00"), "serializable": True},
        )
        if got is None:
            raise AssertionError(f"reference etcd did not answer the (unrecorded) state probe: {why}")
        self.rev = int(got["header"]["revision"])
        self.kvs = {base64.b64decode(kv["key"]): kv for kv in got.get("kvs", [])}

    def num(self, kv: dict[str, Any] | None, name: str) -> int:
        return int((kv or {}).get(name, "0"))


def post_json(port: int, path: str, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Unrecorded POST: (parsed answer, "") on 200, else (None, what came back)."""
    body = json.dumps(obj).encode()
    hdrs = [
        ["Host", f"127.0.0.1:{port}"],
        ["Content-Type", "application/json"],
        ["Content-Length", str(len(body))],
        ["Connection", "close"],
    ]
    res = record.http_exchange("127.0.0.1", port, "POST", path, hdrs, body, timeout=PROBE_TIMEOUT)
    if res.status != 200:
        return None, f"status {res.status}, error {res.error}, body {res.body[:300]!r}"
    parsed = json.loads(res.body)
    return (parsed, "") if isinstance(parsed, dict) else (None, f"not an object: {res.body[:300]!r}")


class OpGen:
    def __init__(self, rnd: random.Random, model: Model) -> None:
        self.r = rnd
        self.m = model

    # -- building blocks
    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def int64(self, n: int) -> object:
        """int64 fields may be JSON strings (what etcd prints) or numbers."""
        return str(n) if self.chance(0.7) else n

    def key(self) -> bytes:
        return self.r.choice(KEYS) if self.chance(0.85) else self.r.choice(MISSING)

    def value(self) -> bytes:
        return self.r.choice(VALUES)

    def target(self) -> dict[str, Any]:
        """key (+ range_end): a single key most of the time, else an interval."""
        if self.chance(0.55):
            return {"key": b64(self.key())}
        k, end = self.r.choice(INTERVALS)
        return {"key": b64(k), "range_end": b64(end)}

    def past_revision(self) -> int:
        lo, hi = max(self.m.compact, 1), self.m.rev
        x = self.r.random()
        if x < 0.7:
            return self.r.randint(lo, hi)
        if x < 0.82 and self.m.compact > 1:
            return self.r.randint(1, self.m.compact - 1)  # compacted
        if x < 0.92:
            return hi + self.r.randint(1, 3)  # future
        return self.r.choice([0, -1])

    def near_revision(self) -> int:
        return max(0, self.m.rev - self.r.randint(-1, 6))

    # -- requests (bodies)
    def put_body(self, key: bytes | None = None, in_txn: bool = False) -> dict[str, Any]:
        k = key if key is not None else self.r.choice(KEYS)
        body: dict[str, Any] = {"key": b64(k), "value": b64(self.value())}
        if self.chance(0.3):
            body["prev_kv"] = True
        p_ignore = 0.03 if in_txn else 0.08  # in a txn a missing key fails the whole txn
        if self.chance(p_ignore):
            del body["value"]
            body["ignore_value"] = True  # needs the key to exist
        if self.chance(p_ignore):
            body["ignore_lease"] = True
        return body

    def range_body(self, in_txn: bool = False) -> dict[str, Any]:
        body = self.target()
        if self.chance(0.4):
            body["limit"] = self.r.choice([self.int64(self.r.randint(0, 4)), -1])
        if self.chance(0.3):
            body["sort_order"] = self.r.choice(SORT_ORDERS)
        if self.chance(0.3):
            body["sort_target"] = self.r.choice(SORT_TARGETS)
        if self.chance(0.2):
            body["keys_only"] = True
        if self.chance(0.1):
            body["count_only"] = True
        if self.chance(0.25 if not in_txn else 0.1):
            body["revision"] = self.int64(self.past_revision())
        for name in ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"):
            if self.chance(0.07):
                body[name] = self.int64(self.near_revision())
        if self.chance(0.2):
            body["serializable"] = True
        return body

    def delete_body(self, key: bytes | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key)} if key is not None else self.target()
        if self.chance(0.5):
            body["prev_kv"] = True
        return body

    def compare(self) -> dict[str, Any]:
        if self.chance(0.15):
            k, end = self.r.choice(INTERVALS[:3])
            c: dict[str, Any] = {"key": b64(k), "range_end": b64(end)}
            kv = None
        else:
            key = self.r.choice(KEYS) if self.chance(0.8) else self.r.choice(MISSING)
            c = {"key": b64(key)}
            kv = self.m.kvs.get(key)
        target = self.r.choice([*CMP_TARGETS, "LEASE"] if self.chance(0.1) else CMP_TARGETS)
        if target != "VERSION" or self.chance(0.7):  # VERSION is the zero enum: may be omitted
            c["target"] = target
        result = self.r.choice(CMP_RESULTS)
        if result != "EQUAL" or self.chance(0.7):
            c["result"] = result
        delta = self.r.choice([0, 0, 0, -1, 1])
        if target == "VALUE":
            cur = base64.b64decode((kv or {}).get("value", "")) if kv else self.value()
            c["value"] = b64(cur if delta == 0 else self.value())
        elif target == "VERSION":
            c["version"] = self.int64(max(0, self.m.num(kv, "version") + delta))
        elif target == "CREATE":
            c["create_revision"] = self.int64(max(0, self.m.num(kv, "create_revision") + delta))
        elif target == "MOD":
            c["mod_revision"] = self.int64(max(0, self.m.num(kv, "mod_revision") + delta))
        else:
            c["lease"] = self.int64(0 if delta == 0 else 7)
        return c

    def request_ops(self, pool: list[bytes], depth: int, n_max: int) -> list[dict[str, Any]]:
        """Branch ops; writes take distinct keys from ``pool`` so the txn is valid (no duplicates)."""
        ops: list[dict[str, Any]] = []
        for _ in range(self.r.randint(0, n_max)):
            kind = self.r.choice(
                ["range", "range", "put", "put", "delete", "txn"]
                if depth == 0
                else ["range", "put", "delete"]
            )
            if kind == "range":
                ops.append({"request_range": self.range_body(in_txn=True)})
            elif kind in ("put", "delete") and pool:
                k = pool.pop()
                if kind == "put":
                    ops.append({"request_put": self.put_body(k, in_txn=True)})
                else:
                    ops.append({"request_delete_range": self.delete_body(k)})
            elif kind == "txn":
                ops.append({"request_txn": self.txn_body(pool, depth + 1)})
        return ops

    def txn_body(self, pool: list[bytes], depth: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {}
        compares = [self.compare() for _ in range(self.r.choice([0, 1, 1, 2, 3]))]
        if compares:
            body["compare"] = compares
        n_max = 3 if depth == 0 else 2
        success = self.request_ops(pool, depth, n_max)
        failure = self.request_ops(pool, depth, n_max)
        if success:
            body["success"] = success
        if failure:
            body["failure"] = failure
        return body

    # -- ops
    def next(self) -> Op:
        kinds: list[tuple[Callable[[], Op], int]] = [
            (self.op_put, 22),
            (self.op_range, 24),
            (self.op_delete, 8),
            (self.op_txn, 18),
            (self.op_compact, 3),
            (self.op_watch, 9),
            (self.op_bad, 12),
        ]
        fn = self.r.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        return fn()

    def op_put(self) -> Op:
        return Op("/v3/kv/put", self.put_body(), note="put")

    def op_range(self) -> Op:
        return Op("/v3/kv/range", self.range_body(), note="range")

    def op_delete(self) -> Op:
        return Op("/v3/kv/deleterange", self.delete_body(), note="deleterange")

    def op_txn(self) -> Op:
        pool = list(KEYS)
        self.r.shuffle(pool)
        return Op("/v3/kv/txn", self.txn_body(pool), note="txn")

    def op_compact(self) -> Op:
        x = self.r.random()
        if x < 0.7 and self.m.rev > self.m.compact:
            rev = self.r.randint(self.m.compact + 1, self.m.rev)
            note = "compaction"
        elif x < 0.85:
            rev = self.r.randint(0, max(self.m.compact, 1))
            note = "compaction at or below the compacted revision"
        else:
            rev = self.m.rev + self.r.randint(1, 5)
            note = "compaction at a future revision"
        body: dict[str, Any] = {"revision": self.int64(rev)}
        if self.chance(0.3):
            body["physical"] = True
        return Op("/v3/kv/compaction", body, note=note, compact_to=rev)

    def op_watch(self) -> Op:
        m = self.m
        lo = max(m.compact + 1, 2)  # revision 1 has no event
        cr: dict[str, Any]
        if m.compact > 1 and self.chance(0.2):
            cr = {
                "key": b64(b"\x00"),
                "range_end": b64(b"\x00"),
                "start_revision": self.int64(self.r.randint(1, m.compact - 1)),
            }
            note = "watch from a compacted revision: created, then canceled"
        elif lo > m.rev:
            return self.op_range()
        else:
            live = sorted(k for k, kv in m.kvs.items() if int(kv["mod_revision"]) >= lo)
            kind = self.r.choice(["all", "prefix", "key", "key"])
            prefixed = [k for k in live if k.startswith(b"k/")]
            if kind == "key" and live:
                k = self.r.choice(live)
                cr = {"key": b64(k)}
                hi = int(m.kvs[k]["mod_revision"])
            elif kind == "prefix" and prefixed:
                cr = {"key": b64(b"k/"), "range_end": b64(b"k0")}
                hi = max(int(m.kvs[k]["mod_revision"]) for k in prefixed)
            else:  # every revision since the start has an event somewhere in the key space
                cr = {"key": b64(b"\x00"), "range_end": b64(b"\x00")}
                hi = m.rev
            cr["start_revision"] = self.int64(self.r.randint(lo, hi))
            note = "watch from a past revision: created, then the catch-up batch"
        if self.chance(0.3):
            cr["prev_kv"] = True
        if self.chance(0.1):
            cr["watch_id"] = self.int64(self.r.randint(1, 20))
        if self.chance(0.05):
            cr["filters"] = [self.r.choice(["NOPUT", "NODELETE"])]
            note += " (a filter may leave only the created line: cut at the deadline)"
        return Op("/v3/watch", {"create_request": cr}, note=note, max_lines=2, timeout=WATCH_TIMEOUT)

    def op_bad(self) -> Op:
        k = b64(self.r.choice(KEYS))
        v = b64(self.value())
        many_ranges = [{"request_range": {"key": b64(b"k/zz")}}]
        choices = [
            Op("/v3/kv/put", {"key": "", "value": v}, note="empty key"),
            Op("/v3/kv/put", {"value": v}, note="no key"),
            Op("/v3/kv/range", {"key": ""}, note="empty key"),
            Op("/v3/kv/deleterange", {}, note="no key"),
            Op("/v3/kv/range", {"key": "!!!notbase64"}, note="bad base64"),
            Op("/v3/kv/range", {"key": k[:-1] if k.endswith("=") else k + "="}, note="bad padding"),
            Op("/v3/kv/put", {"key": k, "value": "#"}, note="bad base64 value"),
            Op("/v3/kv/range", {"key": 5}, note="number for bytes"),
            Op("/v3/kv/put", {"key": k, "value": 5}, note="number for bytes"),
            Op("/v3/kv/range", {"key": k, "limit": "abc"}, note="bad int64 string"),
            Op("/v3/kv/range", {"key": k, "limit": 1.5}, note="float for int64"),
            Op("/v3/kv/range", {"key": k, "keys_only": "true"}, note="string for bool"),
            Op("/v3/kv/range", {"key": k, "revision": "9223372036854775808"}, note="int64 overflow"),
            Op("/v3/kv/range", {"key": k, "sort_order": "SIDEWAYS"}, note="bad enum name"),
            # (an unknown sort_target number is not sent: etcd 3.4.23 dereferences a nil sorter and dies)
            Op("/v3/kv/range", {"key": k, "sort_order": 7}, note="unknown enum number"),
            Op(
                "/v3/kv/range",
                {"key": k, "bogus_field": 1, "other": {"x": [1]}},
                note="unknown fields are ignored",
            ),
            Op("/v3/kv/put", {"key": k, "value": v, "lease": "424242"}, note="unknown lease"),
            Op(
                "/v3/kv/put",
                {"key": k, "value": v, "ignore_lease": True, "lease": "5"},
                note="lease with ignore_lease",
            ),
            Op("/v3/kv/put", {"key": k, "value": v, "ignore_value": True}, note="value with ignore_value"),
            Op("/v3/kv/range", raw="{not json", note="not JSON"),
            Op("/v3/kv/range", raw="[]", note="JSON array"),
            Op("/v3/kv/txn", {"success": many_ranges * 129}, note="129 ops > max-txn-ops 128"),
            Op("/v3/kv/txn", {"success": many_ranges * 128}, note="exactly 128 ops (chunked answer)"),
            Op(
                "/v3/kv/txn",
                {"compare": [{"key": k, "target": "VALUE", "value": v}] * 129},
                note="129 compares",
            ),
            Op(
                "/v3/kv/txn",
                {
                    "success": [
                        {"request_put": {"key": k, "value": v}},
                        {"request_put": {"key": k, "value": v}},
                    ]
                },
                note="duplicate put in a txn",
            ),
            Op(
                "/v3/kv/txn",
                {
                    "success": [
                        {"request_put": {"key": b64(b"k/b"), "value": v}},
                        {"request_delete_range": {"key": b64(b"k/"), "range_end": b64(b"k0")}},
                    ]
                },
                note="put inside a deleted range",
            ),
            Op(
                "/v3/kv/txn",
                {
                    "success": [
                        {"request_put": {"key": k, "value": v}},
                        {"request_txn": {"success": [{"request_put": {"key": k, "value": v}}]}},
                    ]
                },
                note="duplicate key across a nested txn",
            ),
            Op("/v3/kv/txn", {"success": [{}]}, note="empty RequestOp"),
            Op(
                "/v3/kv/txn",
                {"compare": [{"key": "", "target": "VALUE", "value": v}]},
                note="compare with empty key",
            ),
            Op("/v3/kv/txn", {"compare": [{"key": k, "target": "NOPE"}]}, note="bad compare target"),
            Op("/v3/kv/compaction", {"revision": "abc"}, note="bad revision"),
            Op("/v3/watch", raw="not json", note="watch: body not JSON"),
        ]
        return self.r.choice(choices)


# ---------------------------------------------------------------- lockstep driver


@dataclass
class Side:
    label: str
    proc: ServerProc
    rec: Any  # record.Recorder
    ctx: NormContext

    def send(self, op: Op) -> dict[str, Any]:
        kw: dict[str, Any] = {"timeout": op.timeout, "note": op.note, "content_type": "application/json"}
        if op.max_lines is not None:
            kw["max_lines"] = op.max_lines
        if op.raw is not None:
            kw["body"] = op.raw
        else:
            kw["json_body"] = op.body
        result: dict[str, Any] = self.rec.req("POST", op.path, **kw)
        return result


def _open_side(label: str, proc: ServerProc, out_dir: Path, scenario: str) -> Iterator[Side]:
    with open(out_dir / f"{label}.jsonl", "w", encoding="utf-8") as f:
        rec = record.Recorder("random-v3", f, [proc.client_url])
        rec.start(scenario, "seeded random v3 gateway ops")
        yield Side(label, proc, rec, NormContext.for_server([proc.client_url], [proc.peer_url]))


def _raw(rec: dict[str, Any]) -> str:
    r = rec.get("response") or {}
    if r.get("status") is None:
        return f"  (no response: {r.get('error')}, {r.get('cut_reason')})"
    hs = "\n".join(f"  {k}: {v}" for k, v in r.get("headers") or [])
    body = r.get("body") or ""
    framing = ""
    if r.get("chunks") is not None:
        framing = f"\n  (chunked: {len(r['chunks'])} chunks, complete={r.get('complete')}, cut={r.get('cut_reason')})"
    return f"  {r['status']} {r.get('reason', '')}\n{hs}\n  body: {body[:1500]!r}{framing}"


def _not_compared(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in NOT_COMPARED)


class Mismatch(AssertionError):
    pass


def run_lockstep(ops: Iterable[Op], etcd: Side, impl: Side, *, seed: int | None, model: Model) -> int:
    history: list[str] = []
    n = 0
    for n, op in enumerate(ops, start=1):
        a = etcd.send(op)
        b = impl.send(op)
        na, nb = normalize_exchange(a, etcd.ctx), normalize_exchange(b, impl.ctx)
        diffs: list[Difference] = [
            d for d in compare_responses(na, nb, COMPARED_HEADERS) if not _not_compared(d.path)
        ]
        if diffs:
            replay = (
                f"pytest tests/diff/test_random_v3.py --seed {seed}" if seed is not None else "(fixed ops)"
            )
            msg = [
                f"seed={seed} op=#{n}: implementation differs from etcd   [replay: {replay}]",
                f"request: {op.describe(1500)}",
                "differences (normalised):",
                *(f"  {d.render()}" for d in diffs),
                "--- etcd response:",
                _raw(a),
                "--- impl response:",
                _raw(b),
                f"--- previous ops (last {min(len(history), 8)}):",
                *history[-8:],
                f"(full transcripts: {etcd.rec.out.name}, {impl.rec.out.name})",
            ]
            raise Mismatch("\n".join(msg))
        history.append(f"  #{n} {op.describe(200)} -> {na.get('status')}")
        model.learn(op, na.get("status"))
        model.refresh(etcd.proc)
    return n


def _fail_on_mismatch(fn: Callable[[], object]) -> None:
    """Run ``fn``; a Mismatch becomes a plain test failure showing only its report."""
    try:
        fn()
    except Mismatch as e:
        report = str(e)
    else:
        return
    pytest.fail(report, pytrace=False)


def _start_pair(etcd_factory: ServerFactory, impl_factory: ServerFactory) -> tuple[ServerProc, ServerProc]:
    with ThreadPoolExecutor(max_workers=2) as ex:
        fe = ex.submit(etcd_factory)
        fi = ex.submit(impl_factory)
        return fe.result(), fi.result()


@dataclass
class Pair:
    etcd: Side
    impl: Side


@pytest.fixture
def pair(
    etcd_factory: ServerFactory, impl_factory: ServerFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pair]:
    etcd_proc, impl_proc = _start_pair(etcd_factory, impl_factory)
    name = request.node.name
    for e in _open_side("etcd", etcd_proc, tmp_path, name):
        for i in _open_side("impl", impl_proc, tmp_path, name):
            yield Pair(e, i)


def test_random_v3_ops(seed: int, pair: Pair) -> None:
    rnd = random.Random(seed)
    model = Model()
    model.refresh(pair.etcd.proc)
    gen = OpGen(rnd, model)

    def ops() -> Iterator[Op]:
        for _ in range(OPS):
            yield gen.next()

    _fail_on_mismatch(lambda: run_lockstep(ops(), pair.etcd, pair.impl, seed=seed, model=model))


def test_compaction_then_history(pair: Pair) -> None:
    """Fixed ops: writes, a compaction, then reads and watches on both sides of it."""
    k = b64(b"k/a")
    fixed = [
        Op("/v3/kv/put", {"key": k, "value": b64(b"1")}),  # rev 2
        Op("/v3/kv/put", {"key": k, "value": b64(b"2"), "prev_kv": True}),  # rev 3
        Op("/v3/kv/deleterange", {"key": k, "prev_kv": True}),  # rev 4
        Op("/v3/kv/put", {"key": k, "value": b64(b"3")}),  # rev 5
        Op("/v3/kv/range", {"key": k, "revision": "3"}),
        Op("/v3/kv/range", {"key": k, "revision": 4}, note="deleted at 4"),
        Op(
            "/v3/watch",
            {"create_request": {"key": k, "start_revision": "2", "prev_kv": True}},
            max_lines=2,
            timeout=WATCH_TIMEOUT,
            note="puts, delete and put again, with prev_kv",
        ),
        Op("/v3/kv/compaction", {"revision": "3"}, compact_to=3),
        Op("/v3/kv/range", {"key": k, "revision": "2"}, note="compacted"),
        Op("/v3/kv/range", {"key": k, "revision": "3"}, note="the compaction revision is readable"),
        Op("/v3/kv/range", {"key": k, "revision": "6"}, note="future"),
        Op(
            "/v3/watch",
            {"create_request": {"key": k, "start_revision": "2"}},
            max_lines=2,
            timeout=WATCH_TIMEOUT,
            note="compacted: created, then canceled",
        ),
        Op(
            "/v3/watch",
            {"create_request": {"key": k, "start_revision": "3", "prev_kv": True}},
            max_lines=2,
            timeout=WATCH_TIMEOUT,
            note="from the compaction revision",
        ),
        Op("/v3/kv/compaction", {"revision": "3"}, compact_to=3, note="again: compacted"),
        Op(
            "/v3/kv/txn",
            {"success": [{"request_range": {"key": k, "revision": 2}}]},
            note="compacted inside a txn",
        ),
    ]
    model = Model()
    _fail_on_mismatch(lambda: run_lockstep(fixed, pair.etcd, pair.impl, seed=None, model=model))
