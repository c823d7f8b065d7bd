"""Linearizability of real processes under faults: registers with CAS over v2 and over v3.

Several client threads, each sending to its own member, read, write and compare-and-swap a
few registers while the test crashes and restarts a member (kill -9), partitions the leader
away and heals it, and pauses a member (SIGSTOP). Every operation is recorded
(tests/support/history.py) and each API's history is checked with the WGL checker
(tests/support/linearizability.py, KV_MODEL, per key). The v2 store and v3 MVCC are separate
keyspaces in etcd, so the two APIs get separate registers and separate checks.

Outcomes: an answer is the operation's result; a refused connection means it was never sent
(dropped); any other error answer or a timeout on a write is "unknown" (it may have taken
effect: etcd's "request timed out" and "leader changed" do not say); a failed read has no
effect and is dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import pytest

from tests.cluster.helpers import (
    ELECTION_TIMEOUT_S,
    FAST_FLAGS,
    FAULTS_FLAG,
    Cluster,
    b64,
    converged,
    heal,
    isolate,
    pause,
    resume,
    running_cluster,
    unb64,
)
from tests.support.etcd_ref import require_impl
from tests.support.history import HistoryRecorder, Operation
from tests.support.linearizability import KV_MODEL, UNSEEN, KvInput, KvOutput, Verdict, check

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REGISTERS = ("r0", "r1")
CLIENTS_PER_API = 4
CLIENT_TIMEOUT = httpx.Timeout(10.0, connect=1.0)  # longer than the server's request timeout
CHECK_TIMEOUT_S = 60.0

Api = Literal["v2", "v3"]


class Unknown(Exception):
    """The request may or may not have taken effect."""


class NotSent(Exception):
    """The request never reached a server (connection refused): it had no effect."""


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed_cas: Counter[str] = field(default_factory=Counter)
    swapped: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(require_impl(), tmp_path / "impl", [*FAST_FLAGS, FAULTS_FLAG]) as c:
        yield c


# ---- one operation over each API: KvOutput, or raise Unknown / NotSent ------------------------


def _send(fn: Callable[[], httpx.Response]) -> httpx.Response:
    try:
        return fn()
    except httpx.ConnectError as exc:
        raise NotSent() from exc
    except httpx.HTTPError as exc:
        raise Unknown() from exc


def _v2(client: httpx.Client, url: str, inp: KvInput) -> KvOutput:
    key_url = f"{url}/v2/keys/lin/{inp.key.split(':', 1)[1]}"
    if inp.op == "get":
        r = _send(lambda: client.get(key_url, params={"quorum": "true"}))
        if r.status_code == 200:
            return KvOutput(True, r.json()["node"]["value"])
        if r.status_code == 404 and r.json().get("errorCode") == 100:
            return KvOutput(True, None)
        raise Unknown()
    if inp.op == "put":
        r = _send(lambda: client.put(key_url, data={"value": inp.value}))
        if r.status_code in (200, 201):
            return KvOutput()
        raise Unknown()
    if inp.expected is None:  # create: only if absent
        r = _send(lambda: client.put(key_url, params={"prevExist": "false"}, data={"value": inp.value}))
        if r.status_code == 201:
            return KvOutput(True, None)
        if r.status_code == 412 and r.json().get("errorCode") == 105:
            return KvOutput(False, UNSEEN)  # "Key already exists": the value is not reported
        raise Unknown()
    r = _send(lambda: client.put(key_url, params={"prevValue": inp.expected}, data={"value": inp.value}))
    if r.status_code == 200:
        return KvOutput(True, inp.expected)
    if r.status_code == 404 and r.json().get("errorCode") == 100:
        return KvOutput(False, None)
    if r.status_code == 412 and r.json().get("errorCode") == 101:
        # etcd's cause is "[expected != current]": the value the comparison saw.
        cause: str = r.json()["cause"]
        prefix = f"[{inp.expected} != "
        seen = cause[len(prefix) : -1] if cause.startswith(prefix) and cause.endswith("]") else UNSEEN
        return KvOutput(False, seen)
    raise Unknown()


def _v3(client: httpx.Client, url: str, inp: KvInput) -> KvOutput:
    key = b64("lin/" + inp.key.split(":", 1)[1])
    if inp.op == "get":
        r = _send(lambda: client.post(url + "/v3/kv/range", json={"key": key}))
        if r.status_code != 200:
            raise Unknown()
        kvs = r.json().get("kvs", [])
        return KvOutput(True, unb64(kvs[0]["value"]) if kvs else None)
    assert inp.value is not None
    if inp.op == "put":
        r = _send(lambda: client.post(url + "/v3/kv/put", json={"key": key, "value": b64(inp.value or "")}))
        if r.status_code == 200:
            return KvOutput()
        raise Unknown()
    if inp.expected is None:
        compare = {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    else:
        compare = {"key": key, "target": "VALUE", "result": "EQUAL", "value": b64(inp.expected)}
    txn = {
        "compare": [compare],
        "success": [{"request_put": {"key": key, "value": b64(inp.value)}}],
        "failure": [{"request_range": {"key": key}}],  # the value the comparison saw, atomically
    }
    r = _send(lambda: client.post(url + "/v3/kv/txn", json=txn))
    if r.status_code != 200:
        raise Unknown()
    body = r.json()
    if body.get("succeeded", False):
        return KvOutput(True, inp.expected)
    kvs = body["responses"][0]["response_range"].get("kvs", [])
    return KvOutput(False, unb64(kvs[0]["value"]) if kvs else None)


# ---- clients -----------------------------------------------------------------------------------


def _client(
    cid: int, api: Api, c: Cluster, rec: HistoryRecorder, tally: Tally, stop: threading.Event
) -> None:
    rnd = random.Random(cid)
    member = cid % len(c.procs)
    last_seen: dict[str, str | None] = {}
    n = 0
    do = _v2 if api == "v2" else _v3
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        while not stop.is_set():
            n += 1
            key = f"{api}:{rnd.choice(REGISTERS)}"
            kind = rnd.choices(("get", "put", "cas"), (4, 3, 3))[0]
            value = f"c{cid}-{n}"
            if kind == "get":
                inp = KvInput("get", key)
            elif kind == "put":
                inp = KvInput("put", key, value)
            else:
                inp = KvInput("cas", key, value, last_seen.get(key))
            handle = rec.invoke(cid, inp)
            try:
                out = do(client, c.procs[member].client_url, inp)
            except NotSent:
                rec.discard(handle)
                with tally.lock:
                    tally.dropped[api] += 1
                member = (member + 1) % len(c.procs)  # that member is down: use another
                time.sleep(0.05)
                continue
            except Unknown:
                if kind == "get":
                    rec.discard(handle)  # a read that failed had no effect
                    with tally.lock:
                        tally.dropped[api] += 1
                else:
                    rec.unknown(handle)
                    with tally.lock:
                        tally.unknown[api] += 1
                time.sleep(0.05)
                continue
            rec.ok(handle, out)
            with tally.lock:
                (tally.ok if out.ok else tally.failed_cas)[api] += 1
                if kind == "cas" and out.ok:
                    tally.swapped[api] += 1
            # The next CAS expects what this client saw last, so that some of them succeed.
            if kind != "get" and out.ok:
                last_seen[key] = value
            elif out.value is not UNSEEN:
                last_seen[key] = out.value
            time.sleep(rnd.random() * 0.01)


def _faults(c: Cluster, log: list[str]) -> None:
    """The fault schedule: kill -9 + restart, a partitioned leader, a paused member (~20 s)."""
    t0 = time.monotonic()

    def note(what: str) -> None:
        log.append(f"{time.monotonic() - t0:5.1f}s {what}")

    time.sleep(2.0)
    leader = c.leader()
    victim = next(p for p in c.procs if p is not leader)
    victim.kill9()
    note(f"kill -9 {victim.name}")
    time.sleep(4 * ELECTION_TIMEOUT_S)
    victim.spawn()
    c.wait_serving(victim)
    note(f"{victim.name} restarted and serving")
    time.sleep(2.0)

    leader = c.leader()
    isolate(c, leader)
    note(f"leader {leader.name} partitioned away")
    time.sleep(8 * ELECTION_TIMEOUT_S)
    heal(c)
    note("healed")
    time.sleep(2.0)

    leader = c.leader()
    pause(leader)
    note(f"SIGSTOP leader {leader.name}")
    time.sleep(6 * ELECTION_TIMEOUT_S)
    resume(leader)
    note(f"SIGCONT {leader.name}")
    time.sleep(2.0)


def test_registers_with_cas_are_linearizable_over_v2_and_v3_under_faults(fault_cluster: Cluster) -> None:
    c = fault_cluster
    rec = HistoryRecorder()
    tally = Tally()
    stop = threading.Event()
    clients = [
        threading.Thread(
            target=_client, args=(cid, api, c, rec, tally, stop), name=f"client-{cid}", daemon=True
        )
        for cid, api in enumerate(["v2"] * CLIENTS_PER_API + ["v3"] * CLIENTS_PER_API)
    ]
    log: list[str] = []
    for t in clients:
        t.start()
    try:
        _faults(c, log)
    finally:
        stop.set()
        for t in clients:
            t.join(20.0)  # a request in flight ends within CLIENT_TIMEOUT
    assert not any(t.is_alive() for t in clients), "a client thread did not finish"
    converged(c.procs, 30.0)  # and the cluster is whole again

    history = rec.history()
    by_api: dict[str, list[Operation]] = {"v2": [], "v3": []}
    for op in history:
        by_api[op.input.key.split(":", 1)[0]].append(op)
    lines = [f"\nfaults: {'; '.join(log)}"]
    for api, ops in by_api.items():
        started = time.monotonic()
        result = check(KV_MODEL, ops, timeout=CHECK_TIMEOUT_S)
        kinds = Counter(op.input.op for op in ops)
        lines.append(
            f"{api}: {len(ops)} ops ({dict(kinds)}): {tally.ok[api]} ok ({tally.swapped[api]} CAS swapped),"
            f" {tally.failed_cas[api]} failed CAS,"
            f" {tally.unknown[api]} unknown, {tally.dropped[api]} dropped; checker {result.verdict.value}"
            f" in {result.steps} steps, {time.monotonic() - started:.1f}s"
        )
        assert result.verdict is Verdict.OK, f"{api}: {result.explain()}"
        assert tally.ok[api] > 100, f"{api}: too few operations completed to mean much"
        assert tally.swapped[api] > 0 and tally.failed_cas[api] > 0, f"{api}: CAS never exercised both ways"
    print("\n".join(lines))
