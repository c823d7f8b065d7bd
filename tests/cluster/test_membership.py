"""Runtime membership over real processes: add (voter and learner), join, promote, remove,
update peer URLs, leader transfer and the SIGTERM hand-off.

The grow-and-shrink scenario runs against etcd 3.4.23 too (the same flags and requests), so
the test itself is checked by the oracle. Every process is stopped by its pid at the end;
every wait is bounded; ports come from the cluster suite's range (27000-27999).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.helpers import CLUSTER_PORTS, HTTP_TIMEOUT, Cluster, get, member_proc, put_v2, wait_for
from tests.support.etcd_ref import require_etcd, require_impl
from tests.support.procs import ServerProc

pytestmark = pytest.mark.slow

CHANGE_TIMEOUT_S = 30.0  # etcd refuses changes until peers have been connected for 5 s


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def started() -> Iterator[list[ServerProc]]:
    """Processes a test started itself; each is stopped by its pid at the end."""
    procs: list[ServerProc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def _v3(proc: ServerProc, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proc.client_url + path, json=body, timeout=HTTP_TIMEOUT)


def _members(proc: ServerProc) -> list[dict[str, Any]]:
    r = _v3(proc, "/v3/cluster/member/list", {})
    r.raise_for_status()
    members: list[dict[str, Any]] = r.json()["members"]
    return members


def _retry_change(what: str, fn: Callable[[], httpx.Response], ok: int = 200) -> httpx.Response:
    """Membership changes are refused while the cluster is not healthy enough (etcd's strict
    reconfig check); ask again until accepted, bounded."""
    last: list[httpx.Response] = []

    def attempt() -> httpx.Response | None:
        r = fn()
        last[:] = [r]
        return r if r.status_code == ok else None

    try:
        return wait_for(what, attempt, CHANGE_TIMEOUT_S, interval_s=0.5)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last answer {last[0].status_code} {last[0].text}" if last else str(exc)
        ) from None


def _wait_serving(proc: ServerProc, timeout_s: float = 30.0) -> None:
    def ok() -> bool | None:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited\n{proc.stderr_tail()}")
        r = get(proc, "/health", httpx.Timeout(2.0))
        return True if r.status_code == 200 and r.json().get("health") == "true" else None

    wait_for(f"{proc.name} healthy", ok, timeout_s)


def _local_value(proc: ServerProc, key: str) -> str | None:
    """A serializable (local) v2 read: what this member has applied."""
    r = get(proc, f"/v2/keys/{key}")
    return str(r.json()["node"]["value"]) if r.status_code == 200 else None


@pytest.mark.parametrize("impl", ["etcdpy", "etcd"])
def test_grow_from_one_member_to_three_then_shrink(
    impl: str, tmp_path: Path, started: list[ServerProc]
) -> None:
    cmd = require_impl() if impl == "etcdpy" else [require_etcd()]
    ports = CLUSTER_PORTS.allocate(6)
    p1, p2, p3 = (ports[0], ports[1]), (ports[2], ports[3]), (ports[4], ports[5])
    url = {n: f"http://127.0.0.1:{p[1]}" for n, p in (("m1", p1), ("m2", p2), ("m3", p3))}

    m1 = member_proc(cmd, tmp_path, "m1", f"m1={url['m1']}", "new", p1)
    started.append(m1)
    m1.spawn()
    _wait_serving(m1)
    assert put_v2(m1, "k/before", "1").status_code == 201

    # v2 add of a voter, then the new member joins with --initial-cluster-state existing
    r = _retry_change(
        "v2 member add",
        lambda: httpx.post(
            m1.client_url + "/v2/members", json={"peerURLs": [url["m2"]]}, timeout=HTTP_TIMEOUT
        ),
        ok=201,
    )
    added = r.json()
    assert added["peerURLs"] == [url["m2"]] and added["name"] == "" and added["clientURLs"] == []
    m2 = member_proc(cmd, tmp_path, "m2", f"m1={url['m1']},m2={url['m2']}", "existing", p2)
    started.append(m2)
    m2.spawn()
    _wait_serving(m2)
    wait_for("m2 to catch up", lambda: _local_value(m2, "k/before") == "1" or None, 15)
    names = sorted(m["name"] for m in _members(m1))
    assert names == ["m1", "m2"]
    assert {m["ID"] for m in _members(m1)} == {m["ID"] for m in _members(m2)}

    # v3 add of a learner; a second learner is refused; promote once it caught up
    r = _retry_change(
        "v3 learner add",
        lambda: _v3(m1, "/v3/cluster/member/add", {"peerURLs": [url["m3"]], "isLearner": True}),
    )
    learner_id = r.json()["member"]["ID"]
    assert r.json()["member"]["isLearner"] is True
    r2 = _v3(m1, "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"], "isLearner": True})
    assert r2.status_code != 200 and "too many learner members" in r2.json()["message"]
    m3 = member_proc(cmd, tmp_path, "m3", ",".join(f"{n}={url[n]}" for n in ("m1", "m2", "m3")), "existing", p3)
    started.append(m3)
    m3.spawn()
    wait_for("m3 (learner) to catch up", lambda: _local_value(m3, "k/before") == "1" or None, 30)
    # a learner serves status and serializable ranges only (etcd isRPCSupportedForLearner)
    r = _v3(m3, "/v3/kv/put", {"key": _b64("x"), "value": _b64("y")})
    assert (r.status_code, r.json()["message"]) == (503, "etcdserver: rpc not supported for learner")
    r = _v3(m3, "/v3/kv/range", {"key": _b64("x")})
    assert (r.status_code, r.json()["message"]) == (503, "etcdserver: rpc not supported for learner")
    assert _v3(m3, "/v3/kv/range", {"key": _b64("x"), "serializable": True}).status_code == 200
    assert _v3(m3, "/v3/maintenance/status", {}).status_code == 200
    _retry_change("promote", lambda: _v3(m2, "/v3/cluster/member/promote", {"ID": learner_id}))
    assert not any(m.get("isLearner") for m in _members(m1))
    r3 = _v3(m1, "/v3/cluster/member/promote", {"ID": learner_id})
    assert r3.status_code != 200 and r3.json()["message"] == "etcdserver: can only promote a learner member"

    # m3 is a voter now: with m1 killed, m2 and m3 are a majority of three and carry on
    m1.kill9()
    r = wait_for(
        "a write on the two survivors",
        lambda: (lambda resp: resp if resp.status_code == 201 else None)(put_v2(m3, "k/after", "2")),
        20,
    )
    assert _local_value(m2, "k/after") in ("2", None)
    m1.spawn()  # restarts on its data dir; flags no longer matter
    _wait_serving(m1)
    wait_for("m1 to catch up", lambda: _local_value(m1, "k/after") == "2" or None, 20)

    # remove m2 through v3: it stops by itself; a second delete is 410 (v2) / not found (v3)
    m2_id = next(m["ID"] for m in _members(m1) if m["name"] == "m2")
    _retry_change("v3 member remove", lambda: _v3(m1, "/v3/cluster/member/remove", {"ID": m2_id}))
    wait_for("removed m2 to exit", lambda: True if not m2.alive() else None, 20)
    hex_id = format(int(m2_id), "x")
    # (etcd itself answers 500 now and then right after a removal; it settles on 410)
    r = _retry_change(
        "410 for a removed member",
        lambda: httpx.delete(f"{m1.client_url}/v2/members/{hex_id}", timeout=HTTP_TIMEOUT),
        ok=410,
    )
    assert r.status_code == 410 and r.json() == {"message": f"Member permanently removed: {hex_id}"}
    r = _v3(m1, "/v3/cluster/member/remove", {"ID": m2_id})
    assert r.status_code == 404 and r.json()["message"] == "etcdserver: member not found"
    assert sorted(m["name"] for m in _members(m3)) == ["m1", "m3"]
    wait_for(
        "a write on the two remaining members",
        lambda: (lambda resp: resp if resp.status_code in (200, 201) else None)(put_v2(m1, "k/last", "3")),
        20,
    )
    wait_for("m3 to apply it", lambda: _local_value(m3, "k/last") == "3" or None, 10)

    # a member that joined restarts from its own data dir (no --initial-cluster needed any more)
    m3.stop()
    m3.spawn()
    _wait_serving(m3)
    assert put_v2(m3, "k/rejoined", "4").status_code == 201
    wait_for(
        "m1 to apply a write made through the restarted m3",
        lambda: _local_value(m1, "k/rejoined") == "4" or None,
        10,
    )


def test_join_refused_without_member_add(tmp_path: Path, started: list[ServerProc]) -> None:
    ports = CLUSTER_PORTS.allocate(4)
    a_url, b_url = f"http://127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[3]}"
    a = member_proc(require_impl(), tmp_path, "a", f"a={a_url}", "new", (ports[0], ports[1]))
    started.append(a)
    a.spawn()
    _wait_serving(a)
    b = member_proc(require_impl(), tmp_path, "b", f"a={a_url},b={b_url}", "existing", (ports[2], ports[3]))
    started.append(b)
    b.spawn()
    wait_for("b to give up", lambda: True if not b.alive() else None, 15)
    assert b.popen is not None and b.popen.returncode == 1
    assert "no member of the running cluster has peer URLs" in b.stderr_tail()


def test_transfer_leadership_then_sigterm_hands_off(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    c.start()
    leader = c.leader()
    ids = {p.name: int(c.self_stats(p)["id"], 16) for p in c.procs}
    target = next(p for p in c.procs if p is not leader)
    term_before = int(_v3(leader, "/v3/maintenance/status", {}).json()["raftTerm"])
    r = _v3(leader, "/v3/maintenance/transfer-leadership", {"targetID": str(ids[target.name])})
    assert r.status_code == 200, r.text
    assert c.leader() is target
    assert int(_v3(target, "/v3/maintenance/status", {}).json()["raftTerm"]) == term_before + 1
    r = _v3(leader, "/v3/maintenance/transfer-leadership", {"targetID": str(ids[target.name])})
    assert r.status_code == 412 and r.json()["message"] == "etcdserver: not leader"

    # SIGTERM of the leader: it hands over first, so the others need no election timeout
    rest = [p for p in c.procs if p is not target]
    assert target.pid is not None
    t0 = time.monotonic()
    target.stop()
    new_leader = c.leader(among=rest, timeout_s=10)
    elapsed = time.monotonic() - t0
    print(f"leader after SIGTERM of the old one: {new_leader.name} within {elapsed:.2f}s")
    assert "handed leadership to" in target.stderr_tail(80)
    assert put_v2(new_leader, "after-handoff", "x").status_code == 201


def test_update_peer_urls_then_restart_on_them(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    c.start()
    leader = c.leader()
    follower = next(p for p in c.procs if p is not leader)
    fid = c.self_stats(follower)["id"]
    (new_port,) = CLUSTER_PORTS.allocate(1)
    new_url = f"http://127.0.0.1:{new_port}"
    r = httpx.put(f"{leader.client_url}/v2/members/{fid}", json={"peerURLs": [new_url]}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 204, r.text
    assert any(m["peerURLs"] == [new_url] for m in _members(leader))
    follower.stop()
    old = f"http://127.0.0.1:{follower.peer_port}"
    follower.flags = [new_url if f == old else f for f in follower.flags]
    follower.peer_port = new_port
    follower.spawn()
    c.wait_serving(follower)
    assert put_v2(leader, "moved", "yes").status_code == 201
    wait_for(
        "the moved member to apply a new write", lambda: _local_value(follower, "moved") == "yes" or None, 15
    )


def test_removing_the_leader_elects_another(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    c.start()
    leader = c.leader()
    lid = c.self_stats(leader)["id"]
    _retry_change(
        "remove the leader", lambda: _v3(leader, "/v3/cluster/member/remove", {"ID": str(int(lid, 16))})
    )
    wait_for("the removed leader to exit", lambda: True if not leader.alive() else None, 20)
    rest = [p for p in c.procs if p is not leader]
    new_leader = c.leader(among=rest, timeout_s=15)
    assert new_leader is not leader
    r = _v3(new_leader, "/v3/kv/put", {"key": _b64("after"), "value": _b64("1")})
    assert r.status_code == 200, r.text
    assert len(_members(new_leader)) == 2
