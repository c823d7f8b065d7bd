"""Faults survived, measured: partitions, paused and crashed members, rolling restarts.

Real 3-member clusters on loopback (ports 27000-27999), with --heartbeat-interval 50 and
--election-timeout 500 so that many elections fit into a test. Partitions use etcdpy's
test-only fault hook (--unsafe-test-faults, app/faults.py); the SIGSTOP and kill -9 scenarios
need no hook and also run against etcd 3.4 (marked diff; skipped locally without etcd), so the
numbers printed (election times, acknowledged writes) can be compared. Every process is
stopped by its pid at the end, after a SIGCONT (helpers.running_cluster).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cluster.helpers import (
    ELECTION_TIMEOUT_S,
    FAST_FLAGS,
    FAULTS_FLAG,
    HTTP_TIMEOUT,
    Cluster,
    WriteLoad,
    b64,
    converged,
    heal,
    isolate,
    member_id,
    pause,
    post_v3,
    put_v2,
    raft_status,
    read_prefix_v2,
    read_prefix_v3,
    resume,
    running_cluster,
    set_faults,
    wait_for,
)
from tests.support.etcd_ref import require_etcd, require_impl
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# A minority request waits out the server's request timeout (5 s + 2 election timeouts) before
# answering; the client waits longer so that it sees the server's answer, not its own timeout.
MINORITY_TIMEOUT = httpx.Timeout(15.0, connect=2.0)
CATCH_UP_S = 30.0


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A started etcdpy cluster with the fault hook on."""
    with running_cluster(require_impl(), tmp_path / "impl", [*FAST_FLAGS, FAULTS_FLAG]) as c:
        yield c


@pytest.fixture(params=["etcdpy", pytest.param("etcd", marks=pytest.mark.diff)])
def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A started cluster of etcdpy or of etcd 3.4 (no fault hook: signals and kills only)."""
    cmd = [require_etcd()] if request.param == "etcd" else require_impl()
    with running_cluster(cmd, tmp_path / request.param, FAST_FLAGS) as c:
        yield c


def _attempt(request: Callable[[httpx.Client], httpx.Response]) -> tuple[int | None, str]:
    """(status, body) of one request, or (None, why) when it got no answer."""
    with httpx.Client(timeout=MINORITY_TIMEOUT) as client:
        try:
            r = request(client)
        except httpx.HTTPError as exc:
            return None, repr(exc)
        return r.status_code, r.text.strip()


def _state(c: Cluster, p: ServerProc) -> str:
    return str(c.self_stats(p)["state"])


def _term(p: ServerProc) -> int:
    return int(raft_status(p)["raftTerm"])


def _write_both(p: ServerProc, key: str, value: str) -> None:
    r = put_v2(p, key, value)
    assert r.status_code in (200, 201), (p.name, r.text)
    r = post_v3(p, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
    assert r.status_code == 200, (p.name, r.text)


def _same_everywhere(c: Cluster, prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    """The keys under `prefix` (v2 and v3), asserted identical on every member."""
    views = {p.name: (read_prefix_v2(p, prefix), read_prefix_v3(p, prefix)) for p in c.procs}
    first = views[c.procs[0].name]
    assert all(v == first for v in views.values()), views
    return first


def test_partitioned_leader_refuses_and_majority_carries_on(fault_cluster: Cluster) -> None:
    c = fault_cluster
    old = c.leader()
    followers = [p for p in c.procs if p is not old]
    _write_both(old, "part/before", "1")
    term = _term(old)

    isolate(c, old)
    cut_at = time.monotonic()
    new = c.leader(among=followers, timeout_s=20 * ELECTION_TIMEOUT_S)
    elected_s = time.monotonic() - cut_at

    u = old.client_url
    minority: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "v2 put": lambda cl: cl.put(u + "/v2/keys/part/minority", data={"value": "m"}),
        "v2 quorum get": lambda cl: cl.get(u + "/v2/keys/part/before?quorum=true"),
        "v3 put": lambda cl: cl.post(u + "/v3/kv/put", json={"key": b64("part/minority"), "value": b64("m")}),
        "v3 range": lambda cl: cl.post(u + "/v3/kv/range", json={"key": b64("part/before")}),
    }
    with ThreadPoolExecutor(len(minority)) as pool:
        pending = {name: pool.submit(_attempt, req) for name, req in minority.items()}
        # CheckQuorum: a leader that hears from no quorum for an election timeout steps down.
        wait_for("the old leader to step down", lambda: _state(c, old) != "StateLeader" or None, 10.0)
        stepped_down_s = time.monotonic() - cut_at
        # Meanwhile the majority takes writes on both of its members.
        for i, p in enumerate(followers):
            _write_both(p, f"part/majority{i}", p.name)
        answers = {name: f.result() for name, f in pending.items()}
    for name, (status, text) in answers.items():
        assert status is None or status >= 400, f"the minority answered {name} with {status}: {text}"
    assert int(raft_status(new)["raftTerm"]) > term

    heal(c)
    healed_at = time.monotonic()
    assert c.leader(timeout_s=20 * ELECTION_TIMEOUT_S) is new  # the old leader follows, not disrupts
    index, revision = converged(c.procs, CATCH_UP_S)
    caught_up_s = time.monotonic() - healed_at
    v2, v3 = _same_everywhere(c, "part")
    assert v2["/part/before"] == v3["part/before"] == "1"
    # The minority's writes were at most appended to the old leader's log, never committed, and
    # had been answered before the heal: the new leader's log replaced them.
    assert "/part/minority" not in v2 and "part/minority" not in v3
    for i, p in enumerate(followers):
        assert v2[f"/part/majority{i}"] == v3[f"part/majority{i}"] == p.name
    assert len({_term(p) for p in c.procs}) == 1
    print(
        f"\npartition: new leader {new.name} in {elected_s:.2f}s, old leader {old.name} stepped down"
        f" by {stepped_down_s:.2f}s; minority answers {answers}; after heal all agree in"
        f" {caught_up_s:.2f}s at v2 index {index}, v3 revision {revision}"
    )


def test_isolated_follower_rejoins_without_disrupting_the_leader(fault_cluster: Cluster) -> None:
    c = fault_cluster
    leader = c.leader()
    lonely, other = [p for p in c.procs if p is not leader]
    term = _term(leader)

    isolate(c, lonely)
    cut_at = time.monotonic()
    for i in range(10):
        _write_both((leader, other)[i % 2], f"iso/k{i}", str(i))
    # Stay cut off long enough for the follower's election timer to fire several times.
    time.sleep(max(0.0, 6 * ELECTION_TIMEOUT_S - (time.monotonic() - cut_at)))
    assert _term(lonely) == term  # PreVote: an isolated member never raises its term
    assert c.leader(among=[leader, other]) is leader

    heal(c)
    index, revision = converged(c.procs, CATCH_UP_S)
    assert c.leader() is leader
    assert {p.name: _term(p) for p in c.procs} == {p.name: term for p in c.procs}
    v2, v3 = _same_everywhere(c, "iso")
    assert v2 == {f"/iso/k{i}": str(i) for i in range(10)}
    assert v3 == {f"iso/k{i}": str(i) for i in range(10)}
    print(
        f"\nisolated follower {lonely.name}: leader {leader.name} kept term {term}; caught up to {index}/{revision}"
    )


def test_sigstop_follower_then_leader(any_cluster: Cluster) -> None:
    c = any_cluster
    leader = c.leader()
    paused, other = [p for p in c.procs if p is not leader]

    # A paused follower: the other two carry on, and it rejoins without an election.
    term = _term(leader)
    pause(paused)
    stopped_at = time.monotonic()
    for i in range(5):
        _write_both((leader, other)[i % 2], f"stop/f{i}", str(i))
    time.sleep(max(0.0, 4 * ELECTION_TIMEOUT_S - (time.monotonic() - stopped_at)))
    resume(paused)
    converged(c.procs, CATCH_UP_S)
    assert c.leader() is leader
    assert _term(leader) == term

    # A paused leader: the other two elect a new one; the old one steps down when it wakes up.
    old = leader
    survivors = [paused, other]
    pause(old)
    stopped_at = time.monotonic()
    new = c.leader(among=survivors, timeout_s=20 * ELECTION_TIMEOUT_S)
    elected_s = time.monotonic() - stopped_at
    for i in range(5):
        _write_both(survivors[i % 2], f"stop/l{i}", str(i))
    time.sleep(max(0.0, 4 * ELECTION_TIMEOUT_S - (time.monotonic() - stopped_at)))
    resume(old)
    resumed_at = time.monotonic()
    index, revision = converged(c.procs, CATCH_UP_S)
    caught_up_s = time.monotonic() - resumed_at
    assert c.leader() is new
    _write_both(old, "stop/after", "ok")  # the old leader forwards to the new one
    converged(c.procs, CATCH_UP_S)
    v2, v3 = _same_everywhere(c, "stop")
    expected = {**{f"stop/f{i}": str(i) for i in range(5)}, **{f"stop/l{i}": str(i) for i in range(5)}}
    expected["stop/after"] = "ok"
    assert v3 == expected
    assert v2 == {"/" + k: v for k, v in expected.items()}
    print(
        f"\nSIGSTOP leader {old.name}: {new.name} elected in {elected_s:.2f}s; after SIGCONT all"
        f" agreed in {caught_up_s:.2f}s at v2 index {index}, v3 revision {revision}"
    )


def _wait_caught_up(c: Cluster, p: ServerProc) -> None:
    """Until `p` has applied everything the leader had committed when `p` came back."""
    target = int(raft_status(c.leader())["raftIndex"])
    wait_for(
        f"{p.name} to catch up to {target}",
        lambda: int(raft_status(p)["raftAppliedIndex"]) >= target or None,
        CATCH_UP_S,
    )


def test_rolling_restart_under_writes_then_crash_all(any_cluster: Cluster) -> None:
    c = any_cluster
    load = WriteLoad(c.procs, prefix="roll")
    load.start()
    try:
        wait_for("the first writes", lambda: load.acked >= 30 or None, 20.0)
        for p in c.procs:
            down_at = time.monotonic()
            # A clean exit: etcdpy returns 0; etcd re-raises SIGTERM on itself after cleaning up.
            assert p.stop() in (0, -signal.SIGTERM), p.stderr_tail()
            p.spawn()
            c.wait_serving(p)
            _wait_caught_up(c, p)
            # The two others kept taking writes while this one was away.
            assert load.acked_since(down_at) > 0, f"no write acknowledged while {p.name} restarted"
        before_end = time.monotonic()
        wait_for(
            "more writes after the rolling restart", lambda: load.acked_since(before_end) >= 10 or None, 20.0
        )
    finally:
        load.stop()
    converged(c.procs, CATCH_UP_S)
    load.verify(c.procs)
    rolled = load.acked

    for p in c.procs:  # all at once, without a chance to flush anything
        p.kill9()
    c.start()
    c.leader()
    converged(c.procs, CATCH_UP_S)
    load.verify(c.procs)
    print(
        f"\nrolling restart: {len(load.acked_v2)} v2 + {len(load.acked_v3)} v3 acknowledged writes"
        f" ({rolled} total, {load.failures} refused/unknown), all on every member, also after kill -9 of all"
    )


def test_kill9_leader_under_write_load(any_cluster: Cluster) -> None:
    c = any_cluster
    load = WriteLoad(c.procs, prefix="crash")
    load.start()
    try:
        wait_for("the first writes", lambda: load.acked >= 50 or None, 20.0)
        old = c.leader()
        survivors = [p for p in c.procs if p is not old]
        old.kill9()
        killed_at = time.monotonic()
        new = c.leader(among=survivors, timeout_s=20 * ELECTION_TIMEOUT_S)
        elected_s = time.monotonic() - killed_at
        assert new is not old
        wait_for(
            "writes under the new leader", lambda: load.acked_since(killed_at + elected_s) >= 20 or None, 20.0
        )
        old.spawn()
        c.wait_serving(old)
        _wait_caught_up(c, old)
        back_at = time.monotonic()
        wait_for("writes with all three again", lambda: load.acked_since(back_at) >= 20 or None, 20.0)
    finally:
        load.stop()
    index, revision = converged(c.procs, CATCH_UP_S)
    load.verify(c.procs)
    # A generous bound on a loaded machine; the measured time is printed (a few timeouts expected).
    assert elected_s < 20 * ELECTION_TIMEOUT_S
    print(
        f"\nkill -9 leader {old.name} under load: {new.name} elected in {elected_s:.2f}s"
        f" ({elected_s / ELECTION_TIMEOUT_S:.1f} election timeouts); {len(load.acked_v2)} v2 +"
        f" {len(load.acked_v3)} v3 acknowledged writes all on every member ({load.failures}"
        f" refused/unknown); converged at v2 index {index}, v3 revision {revision}"
    )


def test_fault_endpoint_is_a_plain_404_without_the_flag(any_cluster: Cluster) -> None:
    for p in any_cluster.procs:
        for method in ("GET", "PUT"):
            r = httpx.request(method, p.client_url + "/debug/faults", json={}, timeout=HTTP_TIMEOUT)
            assert (r.status_code, r.text) == (404, "404 page not found\n"), (p.name, method)


def test_fault_control_and_a_slow_link(fault_cluster: Cluster) -> None:
    c = fault_cluster
    leader = c.leader()
    followers = [p for p in c.procs if p is not leader]
    ids = [member_id(c, p) for p in followers]
    url = leader.client_url + "/debug/faults"
    assert httpx.get(url, timeout=HTTP_TIMEOUT).json() == {"drop": [], "delay_ms": {}}
    for bad in (
        b"[1]",
        b'{"drop": "x"}',
        b'{"drop": ["zz"]}',
        b'{"delay_ms": {"a": -1}}',
        b'{"bogus": 1}',
        b"{",
    ):
        r = httpx.put(url, content=bad, timeout=HTTP_TIMEOUT)
        assert r.status_code == 400, (bad, r.text)
    assert httpx.delete(url, timeout=HTTP_TIMEOUT).status_code == 405

    # Both links from the leader slowed: no entry can commit before one delayed append arrives.
    delay_ms = 200
    table = set_faults(leader, delay_ms={i: delay_ms for i in ids})
    assert table == {"drop": [], "delay_ms": dict.fromkeys(sorted(ids), delay_ms)}
    started = time.monotonic()
    _write_both(leader, "slow/k", "v")
    slow_s = (time.monotonic() - started) / 2
    assert slow_s >= 0.9 * delay_ms / 1000, f"a write over slowed links took only {slow_s:.3f}s"
    r = httpx.put(url, content=b"", timeout=HTTP_TIMEOUT)  # an empty body heals
    assert r.json() == {"drop": [], "delay_ms": {}}
    converged(c.procs, CATCH_UP_S)
    assert c.leader() is leader  # 200 ms per append is well under the 500 ms election timeout
    print(f"\nslow links ({delay_ms} ms each way out of the leader): a write took {slow_s:.2f}s")
