"""kill -9 in the middle of a v2 write load: nothing acknowledged is lost, nothing unknown appears.

Eight writer threads (one keep-alive httpx client each) write their own keys with PUT, CAS,
DELETE, compare-and-delete and in-order POST, one request at a time, and record every 2xx
answer (key, action, modifiedIndex, value). After ~2 s the server gets SIGKILL mid-load and is
restarted on the same data dir. Then:

- every acknowledged write is in the store with the value and modifiedIndex it was answered
  with, unless a later acknowledged write to the same key replaced it: the store under the
  test's prefix equals a replay of the acknowledged answers in modifiedIndex order;
- the only differences allowed are the writes whose answer never came (at most one per writer,
  in flight at the kill): applied or not, but if applied then with exactly their value, at an
  index no acknowledged write has, after the key's acknowledged state;
- acknowledged indices are unique, above the index the round started from, increasing in each
  writer's program order; the restarted server's X-Etcd-Index is at least the largest of them.

Three rounds on the same data dir (kill, restart, check, more load), and the whole thing again
with ``--snapshot-count 50`` so snapshots are taken (and old WAL segments may be released)
while the load runs. Keys of earlier rounds must not change in later rounds.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Literal

import httpx
import pytest

from tests.crash.helpers import HTTP_TIMEOUT, Servers, read_tree, restart_ready
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WRITERS = 8
LOAD_S = 2.0
ROUNDS = 3
MIN_ACKS_PER_ROUND = 40  # below this the round proves little: fail rather than pass vacuously
PREFIX = "/load"

Kind = Literal["set", "overwrite", "cas", "delete", "cad", "post"]
KINDS: tuple[Kind, ...] = ("set", "overwrite", "cas", "delete", "cad", "post")
WEIGHTS = (50, 10, 12, 8, 8, 12)
EXPECTED_ACTION: dict[Kind, str] = {
    "set": "set",
    "overwrite": "set",
    "cas": "compareAndSwap",
    "delete": "delete",
    "cad": "compareAndDelete",
    "post": "create",
}
WRITES: frozenset[Kind] = frozenset({"set", "overwrite", "cas", "post"})


@dataclass
class Op:
    writer: int
    seq: int
    kind: Kind
    key: str  # the key addressed; for "post" the directory
    value: str | None  # None for deletes
    outcome: Literal["ok", "unknown", "rejected"] = "unknown"
    action: str | None = None
    result_key: str | None = None  # node.key of the answer (the created key for "post")
    index: int | None = None  # node.modifiedIndex of the answer
    detail: str = ""

    def __str__(self) -> str:
        return (
            f"w{self.writer}#{self.seq} {self.kind} {self.key} value={self.value!r} -> {self.outcome}"
            f" {self.action or ''} {self.result_key or ''} index={self.index} {self.detail}".rstrip()
        )


# ---------------------------------------------------------------- the load


def _request(c: httpx.Client, op: Op, live: dict[str, tuple[str, int]]) -> httpx.Response:
    url = f"/v2/keys{op.key}"
    match op.kind:
        case "set" | "overwrite":
            return c.put(url, data={"value": op.value})
        case "cas":
            return c.put(url, params={"prevValue": live[op.key][0]}, data={"value": op.value})
        case "delete":
            return c.delete(url)
        case "cad":
            return c.delete(url, params={"prevIndex": str(live[op.key][1])})
        case "post":
            return c.post(url, data={"value": op.value})


def _writer(
    base_url: str, prefix: str, w: int, rng: random.Random, stop: threading.Event, ops: list[Op]
) -> None:
    """One client, one request at a time, on keys nobody else touches. Returns at the first
    answer it cannot classify as acknowledged (the kill), since the key's state is unknown then."""
    live: dict[str, tuple[str, int]] = {}  # this writer's keys as its acknowledged answers left them
    base = f"{prefix}/w{w}"
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT) as c:
        seq = 0
        while not stop.is_set():
            seq += 1
            kind: Kind = rng.choices(KINDS, WEIGHTS)[0] if live else "set"
            value = None if kind in ("delete", "cad") else f"{base}#{seq}"
            if kind == "set":
                key = f"{base}/k{seq}"
            elif kind == "post":
                key = f"{base}/q"
            else:
                key = rng.choice(sorted(live))
            op = Op(w, seq, kind, key, value)
            ops.append(op)
            try:
                r = _request(c, op, live)
                body = r.json() if r.is_success else None
            except (httpx.HTTPError, ValueError) as exc:
                op.detail = f"no answer: {exc!r}"
                return
            if r.status_code >= 500:
                op.detail = f"no answer: {r.status_code} {r.text[:200]}"
                return
            if body is None:
                op.outcome = "rejected"
                op.detail = f"{r.status_code} {r.text[:200]}"
                return
            node = body["node"]
            op.outcome, op.action = "ok", body.get("action")
            op.result_key, op.index = node["key"], node["modifiedIndex"]
            if kind in WRITES:
                assert value is not None
                live[node["key"]] = (value, node["modifiedIndex"])
            else:
                live.pop(key, None)


def run_load_and_kill(proc: ServerProc, prefix: str, seed: int) -> list[Op]:
    stop = threading.Event()
    per_writer: list[list[Op]] = [[] for _ in range(WRITERS)]
    threads = [
        threading.Thread(
            target=_writer,
            args=(proc.client_url, prefix, w, random.Random(f"{seed}/{prefix}/{w}"), stop, per_writer[w]),
            name=f"writer-{w}",
            daemon=True,
        )
        for w in range(WRITERS)
    ]
    for t in threads:
        t.start()
    time.sleep(LOAD_S)
    rc = proc.kill9()
    stop.set()
    deadline = time.monotonic() + 15
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "writer threads did not finish after the kill"
    assert rc == -9, f"server was not killed by SIGKILL (exit status {rc}); it must have died on its own"
    return [op for ops in per_writer for op in ops]


# ---------------------------------------------------------------- the check


def _explains(
    op: Op,
    key: str,
    got: tuple[str, int] | None,
    want: tuple[str, int] | None,
    acked_indices: set[int],
    floor: int,
) -> bool:
    """Could the unanswered ``op`` have turned ``want`` (acknowledged state) into ``got``?"""
    if op.kind in ("delete", "cad"):
        return op.key == key and got is None and want is not None
    if got is None or got[0] != op.value or got[1] in acked_indices or got[1] <= floor:
        return False
    if want is not None and got[1] <= want[1]:
        return False
    if op.kind == "post":
        parent, _, name = key.rpartition("/")
        return parent == op.key and want is None and name == f"{got[1]:020d}"
    return op.key == key


def check_round(actual: dict[str, tuple[str, int]], ops: list[Op], floor: int) -> list[str]:
    problems = [f"rejected: {op}" for op in ops if op.outcome == "rejected"]
    acked = sorted((op for op in ops if op.outcome == "ok"), key=lambda op: op.index or 0)
    by_index: dict[int, Op] = {}
    for op in acked:
        assert op.index is not None
        if op.action != EXPECTED_ACTION[op.kind]:
            problems.append(
                f"answered with action {op.action!r}, expected {EXPECTED_ACTION[op.kind]!r}: {op}"
            )
        if op.index <= floor:
            problems.append(f"index not above the round's starting index {floor}: {op}")
        if op.index in by_index:
            problems.append(f"two acknowledged writes share index {op.index}: {by_index[op.index]} / {op}")
        by_index[op.index] = op
    for w in range(WRITERS):
        mine = [op.index or 0 for op in ops if op.writer == w and op.outcome == "ok"]
        if mine != sorted(mine) or len(set(mine)) != len(mine):
            problems.append(f"writer {w}: indices of sequential writes are not increasing: {mine}")

    expected: dict[str, tuple[str, int]] = {}
    for op in acked:
        assert op.index is not None and op.result_key is not None
        if op.kind in WRITES:
            assert op.value is not None
            expected[op.result_key] = (op.value, op.index)
        elif expected.pop(op.key, None) is None:
            problems.append(f"acknowledged delete of a key the replay does not have: {op}")

    indices = [index for _, index in actual.values()]
    if len(set(indices)) != len(indices):
        problems.append(f"keys in the store share a modifiedIndex: {sorted(indices)}")

    pending = [op for op in ops if op.outcome == "unknown"]
    for key in sorted(set(actual) | set(expected)):
        got, want = actual.get(key), expected.get(key)
        if got == want:
            continue
        cause = next((op for op in pending if _explains(op, key, got, want, set(by_index), floor)), None)
        if cause is None:
            what = "missing" if got is None else "unknown" if want is None else "different"
            problems.append(f"{key}: {what}: store has {got}, replay of acknowledged writes has {want}")
        else:
            pending.remove(cause)  # one unanswered request explains at most one difference
    return problems


# ---------------------------------------------------------------- the test


@pytest.mark.parametrize(
    "extra",
    [pytest.param((), id="default"), pytest.param(("--snapshot-count", "50"), id="snapshot-count-50")],
)
def test_acknowledged_writes_survive_kill9_under_load(
    servers: Servers, seed: int, extra: tuple[str, ...]
) -> None:
    proc = servers.fresh(extra=extra)
    earlier: dict[str, tuple[str, int]] = {}  # keys of finished rounds, as checked after their crash
    for rnd in range(ROUNDS):
        prefix = f"{PREFIX}/r{rnd}"
        before, floor = read_tree(proc.client_url, PREFIX)
        assert before == earlier, f"round {rnd}: earlier rounds' keys changed before the load"
        ops = run_load_and_kill(proc, prefix, seed)
        restart_ready(proc)
        after, index = read_tree(proc.client_url, PREFIX)

        acked = [op for op in ops if op.outcome == "ok"]
        unknown = [op for op in ops if op.outcome == "unknown"]
        context = (
            f"seed={seed} round={rnd} extra={extra} acked={len(acked)} unanswered={len(unknown)}\n"
            + "\n".join(f"  unanswered: {op}" for op in unknown)
            + f"\n{proc.stderr_tail(20)}"
        )
        assert len(acked) >= MIN_ACKS_PER_ROUND, f"too few acknowledged writes to test anything\n{context}"
        mine = {k: v for k, v in after.items() if k.startswith(prefix + "/")}
        others = {k: v for k, v in after.items() if not k.startswith(prefix + "/")}
        problems = check_round(mine, ops, floor)
        if others != earlier:
            problems.append(
                f"keys of earlier rounds changed: {sorted(set(others.items()) ^ set(earlier.items()))[:10]}"
            )
        max_acked = max(op.index or 0 for op in acked)
        if index < max_acked:
            problems.append(f"X-Etcd-Index after restart is {index}, below acknowledged index {max_acked}")
        assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40]) + f"\n{context}"
        earlier.update(mine)

    if extra:
        snaps = sorted((proc.data_dir / "member" / "snap").glob("*.snap"))
        assert snaps, (
            f"--snapshot-count 50 never wrote a snapshot file in {proc.data_dir / 'member' / 'snap'}"
        )
