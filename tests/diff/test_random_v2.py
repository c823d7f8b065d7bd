"""Seeded random v2 operation sequences, sent in lockstep to a fresh etcd and a fresh implementation.

Every answer is compared: status, the relevant headers (X-Etcd-Index, Content-Type, presence of
X-Raft-*, X-Etcd-Cluster-Id, Location, Allow, Content-Length vs chunked), and the normalised body
exactly (tests/support/normalize.py).  The first difference fails the seed with the seed, the
op number, the request and both responses; ``pytest tests/diff/test_random_v2.py --seed N``
replays one seed.  Both transcripts are kept in the test's tmp dir.

Timing is kept out of the comparison: TTLs are either large (never expire during the test) or
0, and after a ttl=0 write the test waits (unrecorded) until the key has expired on both
servers before the next op.  Watches only use ``waitIndex`` values that have a matching event
in the history, so they return immediately.  One small test waits for a real expiry.
"""

from __future__ import annotations

import random
import time
import urllib.parse
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
from tests.support.procs import ServerProc, http_get

record: Any = _record  # spec tooling copied verbatim, untyped

pytestmark = [pytest.mark.diff, pytest.mark.slow]

SEEDS = list(range(1, 11))
OPS = 150
ROOT = "/r"
NAMES = ["a", "b", "c", "d", "_h", "x y"]  # decoded; url() percent-encodes
VALUES = ["", "v", "1", "two words", "ü<&>\"'", "tab\tnl\n", "x" * 60, "%41", "a=b&c=d"]
COMPARED_HEADERS = (
    "content-type",
    "x-etcd-index",
    "x-raft-index",
    "x-raft-term",
    "x-etcd-cluster-id",
    "location",
    "allow",
    "content-length",
    "transfer-encoding",
)

REQUEST_TIMEOUT = 5.0
WATCH_TIMEOUT = 3.0
SETTLE_TIMEOUT = 5.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("seed")
        seeds = [chosen] if chosen is not None else SEEDS
        metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds])


# ---------------------------------------------------------------- ops


@dataclass
class Op:
    method: str
    path: str  # full request path, exactly as sent (may contain // or ..)
    query: str | None = None
    form: dict[str, str] | None = None
    note: str = ""
    timeout: float = REQUEST_TIMEOUT
    settle_key: str | None = None  # wait until this key is gone on both servers (ttl=0)

    def describe(self) -> str:
        q = f"?{self.query}" if self.query else ""
        f = f" form={self.form!r}" if self.form is not None else ""
        n = f"   # {self.note}" if self.note else ""
        return f"{self.method} {self.path}{q}{f}{n}"


@dataclass
class Model:
    """What the reference etcd told us exists: used to pick plausible targets, never compared."""

    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    modified: dict[str, int] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)  # (index, key), no refreshes

    def _remove(self, key: str) -> None:
        for k in [k for k in self.files if k == key or k.startswith(key + "/")]:
            del self.files[k]
            self.modified.pop(k, None)
        for d in [d for d in self.dirs if d == key or d.startswith(key + "/")]:
            self.dirs.discard(d)
            self.modified.pop(d, None)

    def learn(self, op: Op, status: int | None, body: Any) -> None:
        if status not in (200, 201) or not isinstance(body, dict) or "action" not in body:
            return
        action, node = body["action"], body.get("node") or {}
        key = node.get("key")
        if not isinstance(key, str) or action == "get":
            return
        refresh = "refresh=true" in (op.query or "")
        if action in ("delete", "compareAndDelete", "expire"):
            self._remove(key)
        else:
            if node.get("dir"):
                self.files.pop(key, None)
                self.dirs.add(key)
            else:
                self.files[key] = node.get("value", "")
            parts = key.split("/")
            for i in range(2, len(parts)):
                self.dirs.add("/".join(parts[:i]))
            self.modified[key] = node.get("modifiedIndex", 0)
        if not refresh and isinstance(node.get("modifiedIndex"), int):
            self.events.append((node["modifiedIndex"], key))


class OpGen:
    def __init__(self, rnd: random.Random, model: Model) -> None:
        self.r = rnd
        self.m = model
        self.ttl0_budget = 3

    # -- keys
    def fresh_key(self) -> str:
        depth = self.r.choice([1, 1, 2, 2, 3])
        return ROOT + "".join("/" + self.r.choice(NAMES) for _ in range(depth))

    def file_key(self) -> str:
        files = sorted(self.m.files)
        return self.r.choice(files) if files and self.r.random() < 0.8 else self.fresh_key()

    def dir_key(self) -> str:
        dirs = sorted(self.m.dirs)
        return self.r.choice(dirs) if dirs and self.r.random() < 0.8 else self.fresh_key()

    @staticmethod
    def root_key() -> str:
        return ROOT

    def any_key(self) -> str:
        return self.r.choice([self.file_key, self.dir_key, self.fresh_key])()

    @staticmethod
    def url(key: str) -> str:
        return "/v2/keys" + urllib.parse.quote(key, safe="/")

    def value(self) -> str:
        return self.r.choice(VALUES)

    def big_ttl(self) -> str:
        return str(self.r.choice([600, 3600, 86400, 99999999999]))

    # -- ops
    def next(self) -> Op:
        kinds = [
            (self.op_set, 14),
            (self.op_create, 6),
            (self.op_update, 6),
            (self.op_cas, 10),
            (self.op_cad, 6),
            (self.op_delete, 8),
            (self.op_mkdir, 6),
            (self.op_post, 5),
            (self.op_get, 14),
            (self.op_watch, 8),
            (self.op_refresh, 3),
            (self.op_bad, 10),
            (self.op_head, 2),
            (self.op_ttl0, 2),
        ]
        fn = self.r.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        return fn()

    def op_set(self) -> Op:
        q = f"ttl={self.big_ttl()}" if self.r.random() < 0.2 else None
        return Op("PUT", self.url(self.file_key()), q, {"value": self.value()}, "set")

    def op_create(self) -> Op:
        return Op("PUT", self.url(self.any_key()), "prevExist=false", {"value": self.value()}, "create")

    @staticmethod
    def _settle_if_wrapped(ttl: str, key: str) -> str | None:
        # Update and CAS take a wrapped huge ttl as an expiration in the past (etcd quirk, no
        # minimum check there): the key then expires at the next 500 ms sync, so wait for it.
        return key if ttl == "99999999999" else None

    def op_update(self) -> Op:
        form = {"value": self.value()}
        key = self.any_key()
        settle = None
        if self.r.random() < 0.3:
            form["ttl"] = self.r.choice(["", self.big_ttl()])
            settle = self._settle_if_wrapped(form["ttl"], key)
        return Op("PUT", self.url(key), "prevExist=true", form, "update", settle_key=settle)

    def op_cas(self) -> Op:
        key = self.file_key()
        right = self.r.random() < 0.6
        if self.r.random() < 0.5:
            cur = self.m.files.get(key, "nope")
            pv = cur if right else cur + "-wrong"
            q = "prevValue=" + urllib.parse.quote(pv, safe="")
        else:
            idx = self.m.modified.get(key, 1)
            q = f"prevIndex={idx if right else idx + self.r.choice([1, 7, -1 * max(idx - 1, 0)])}"
        settle = None
        if self.r.random() < 0.2:
            ttl = self.big_ttl()
            q += f"&ttl={ttl}"
            settle = self._settle_if_wrapped(ttl, key)
        return Op(
            "PUT",
            self.url(key),
            q,
            {"value": self.value()},
            "cas " + ("right" if right else "wrong"),
            settle_key=settle,
        )

    def op_cad(self) -> Op:
        key = self.file_key()
        right = self.r.random() < 0.5
        if self.r.random() < 0.5:
            cur = self.m.files.get(key, "nope")
            q = "prevValue=" + urllib.parse.quote(cur if right else cur + "x", safe="")
        else:
            idx = self.m.modified.get(key, 1)
            q = f"prevIndex={idx if right else idx + 3}"
        return Op("DELETE", self.url(key), q, None, "cad " + ("right" if right else "wrong"))

    def op_delete(self) -> Op:
        q = self.r.choice([None, None, "dir=true", "recursive=true", "dir=true&recursive=true"])
        return Op("DELETE", self.url(self.any_key()), q, None, "delete")

    def op_mkdir(self) -> Op:
        q = "dir=true"
        r = self.r.random()
        if r < 0.2:
            q += "&prevExist=false"
        elif r < 0.35:
            q += f"&ttl={self.big_ttl()}"
        return Op(
            "PUT", self.url(self.dir_key() if self.r.random() < 0.3 else self.fresh_key()), q, None, "mkdir"
        )

    def op_post(self) -> Op:
        q = f"ttl={self.big_ttl()}" if self.r.random() < 0.1 else None
        return Op("POST", self.url(self.dir_key()), q, {"value": self.value()}, "in-order create")

    def op_get(self) -> Op:
        flags = [f for f in ("recursive=true", "sorted=true", "quorum=true") if self.r.random() < 0.4]
        key = self.r.choice([self.dir_key, self.dir_key, self.file_key, self.root_key])()
        return Op("GET", self.url(key), "&".join(flags) or None, None, "get")

    def op_head(self) -> Op:
        return Op("HEAD", self.url(self.any_key()), None, None, "head")

    def op_refresh(self) -> Op:
        ttl = self.big_ttl()
        q = f"ttl={ttl}&refresh=true"
        key = self.any_key()
        settle = None
        if self.r.random() < 0.5:
            q += "&prevExist=true"
            settle = self._settle_if_wrapped(ttl, key)
        return Op("PUT", self.url(key), q, None, "refresh", settle_key=settle)

    def op_watch(self) -> Op:
        if not self.m.events:
            return self.op_get()
        index, key = self.r.choice(self.m.events)
        wait_index = max(1, index - self.r.choice([0, 0, 1, 3]))
        q = f"wait=true&waitIndex={wait_index}"
        parts = key.split("/")
        if len(parts) > 2 and self.r.random() < 0.4:
            key = "/".join(parts[: self.r.randrange(2, len(parts))])  # an ancestor, recursively
            q += "&recursive=true"
        elif self.r.random() < 0.2:
            q += "&recursive=true"
        return Op("GET", self.url(key), q, None, "watch from history", timeout=WATCH_TIMEOUT)

    def op_ttl0(self) -> Op:
        if self.ttl0_budget <= 0:
            return self.op_set()
        self.ttl0_budget -= 1
        key = self.fresh_key()
        return Op(
            "PUT",
            self.url(key),
            "ttl=0",
            {"value": self.value()},
            "ttl=0: expires at the next sync",
            settle_key=key,
        )

    def op_bad(self) -> Op:
        k = self.any_key()
        u = self.url(k)
        v = {"value": self.value()}
        choices = [
            Op("PUT", u, "ttl=abc", v, "bad ttl"),
            Op("PUT", u, "ttl=-1", v, "negative ttl"),
            Op("PUT", u, "prevIndex=-1", v, "negative prevIndex"),
            Op("PUT", u, "prevIndex=abc", v, "bad prevIndex"),
            Op("PUT", u, "dir=maybe", None, "bad dir flag"),
            Op("PUT", u, "prevExist=maybe", v, "bad prevExist"),
            Op("GET", u, "recursive=maybe", None, "bad recursive"),
            Op("GET", u, "sorted=maybe", None, "bad sorted"),
            Op("GET", u, "wait=true&waitIndex=abc", None, "bad waitIndex"),
            Op("DELETE", u, "prevIndex=-1", None, "CAD bad prevIndex"),
            Op("PUT", u, "refresh=true", None, "refresh without ttl"),
            Op("PUT", u, "ttl=100&refresh=true", v, "refresh with a value"),
            Op("PUT", u, "prevExist=true&dir=true&prevValue=x", None, "dir with prevValue"),
            Op("GET", self.url(ROOT + "/../" + k.lstrip("/")), None, None, "dot-dot path"),
            Op("GET", self.url(ROOT + "//" + self.r.choice(NAMES)), None, None, "double slash"),
            Op("PUT", self.url(k + "/./x"), None, v, "dot segment on PUT"),
            Op("DELETE", self.url(k + "/.."), "recursive=true", None, "dot-dot on DELETE"),
            Op("PATCH", u, None, v, "method not allowed"),
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
        kw: dict[str, Any] = {"timeout": op.timeout}
        if op.query is not None:
            kw["query"] = op.query
        if op.form is not None:
            kw["form"] = op.form
        result: dict[str, Any] = self.rec.req(op.method, op.path, note=op.note, **kw)
        return result


def _open_side(label: str, proc: ServerProc, out_dir: Path, scenario: str) -> Iterator[Side]:
    with open(out_dir / f"{label}.jsonl", "w", encoding="utf-8") as f:
        rec = record.Recorder("random", f, [proc.client_url])
        rec.start(scenario, "seeded random v2 ops")
        yield Side(label, proc, rec, NormContext.for_server([proc.client_url], [proc.peer_url]))


def _raw(rec: dict[str, Any]) -> str:
    r = rec.get("response") or {}
    if r.get("status") is None:
        return f"  (no response: {r.get('error')}, {r.get('cut_reason')})"
    hs = "\n".join(f"  {k}: {v}" for k, v in r.get("headers") or [])
    body = r.get("body") or ""
    return f"  {r['status']} {r.get('reason', '')}\n{hs}\n  body: {body[:1500]!r}"


def _start_pair(etcd_factory: ServerFactory, impl_factory: ServerFactory) -> tuple[ServerProc, ServerProc]:
    with ThreadPoolExecutor(max_workers=2) as ex:
        fe = ex.submit(etcd_factory)
        fi = ex.submit(impl_factory)
        return fe.result(), fi.result()


def _settle(sides: list[Side], key: str) -> None:
    """Unrecorded: wait until ``key`` is gone (ttl=0 expiry happens at the next 500 ms sync)."""
    for s in sides:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            st, _, _ = http_get(s.proc.client_port, OpGen.url(key))
            if st == 404:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{s.label}: ttl=0 key {key} still present after {SETTLE_TIMEOUT}s", pytrace=False
                )
            time.sleep(0.05)


class Mismatch(AssertionError):
    pass


def run_lockstep(
    ops: Iterable[Op], etcd: Side, impl: Side, *, seed: int | None, model: Model | None = None
) -> int:
    history: list[str] = []
    n = 0
    for n, op in enumerate(ops, start=1):
        a = etcd.send(op)
        b = impl.send(op)
        na, nb = normalize_exchange(a, etcd.ctx), normalize_exchange(b, impl.ctx)
        diffs: list[Difference] = compare_responses(na, nb, COMPARED_HEADERS)
        if diffs:
            replay = (
                f"pytest tests/diff/test_random_v2.py --seed {seed}" if seed is not None else "(fixed ops)"
            )
            msg = [
                f"seed={seed} op=#{n}: implementation differs from etcd   [replay: {replay}]",
                f"request: {op.describe()}",
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
        history.append(f"  #{n} {op.describe()} -> {na.get('status')}")
        if model is not None:
            model.learn(op, na.get("status"), (a.get("response") or {}).get("json"))
        if op.settle_key and na.get("status") in (200, 201):
            _settle([etcd, impl], op.settle_key)
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


def test_random_v2_ops(seed: int, pair: Pair) -> None:
    rnd = random.Random(seed)
    model = Model()
    gen = OpGen(rnd, model)

    def ops() -> Iterator[Op]:
        for _ in range(OPS):
            yield gen.next()

    _fail_on_mismatch(lambda: run_lockstep(ops(), pair.etcd, pair.impl, seed=seed, model=model))


def test_ttl_expiry_and_expire_events(pair: Pair) -> None:
    """The one test that waits for real expiry: key + dir with ttl=1, then GET and history watches."""
    fixed = [
        Op("PUT", "/v2/keys/exp/k", "ttl=1", {"value": "v"}),
        Op("PUT", "/v2/keys/exp/d", "dir=true&ttl=1"),
        Op("PUT", "/v2/keys/exp/d/child", None, {"value": "c"}),
        Op("PUT", "/v2/keys/exp/keep", None, {"value": "stays"}),
    ]
    after = [
        Op("GET", "/v2/keys/exp/k"),
        Op("GET", "/v2/keys/exp/d/child"),
        Op("GET", "/v2/keys/exp", "recursive=true&sorted=true"),
        Op("GET", "/v2/keys/exp/k", "wait=true&waitIndex=4", timeout=WATCH_TIMEOUT, note="the set event"),
        Op("GET", "/v2/keys/exp/k", "wait=true&waitIndex=8", timeout=WATCH_TIMEOUT, note="the expire event"),
        Op("GET", "/v2/keys/exp", "wait=true&recursive=true&waitIndex=8", timeout=WATCH_TIMEOUT),
    ]

    def run() -> None:
        run_lockstep(fixed, pair.etcd, pair.impl, seed=None)
        time.sleep(2.6)  # ttl 1 s + up to 500 ms sync tick + margin
        run_lockstep(after, pair.etcd, pair.impl, seed=None)

    _fail_on_mismatch(run)
