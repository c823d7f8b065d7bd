"""A 3-member cluster on loopback: election, forwarding, reads everywhere, leader crash, restart.

The headers asserted on a fresh cluster (X-Etcd-Index 7, X-Raft-Index 8, X-Raft-Term 2, the
/v2/stats/leader 403 on followers, sorted /v2/machines) are what etcd 3.4.23 answers
(tests/diff/golden/cluster.jsonl, and test_fresh_cluster_matches_etcd against a live etcd).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.helpers import Cluster, get, post_v3, put_v2, wait_for
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ELECTION_TIMEOUT_S = 1.0  # etcd's default --election-timeout


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def fresh_view(c: Cluster) -> dict[str, Any]:
    """What a client sees first on every member of a fresh cluster (the first v2 request each)."""
    headers = {}
    for p in c.procs:
        r = get(p, "/v2/keys/")
        assert r.status_code == 200, r.text
        headers[p.name] = (r.headers["x-etcd-index"], r.headers["x-raft-index"], r.headers["x-raft-term"])
    leader = c.leader()
    leader_stats = {p.name: get(p, "/v2/stats/leader") for p in c.procs}
    return {
        "first_v2_headers": headers,
        "stats_leader_status": {n: r.status_code for n, r in leader_stats.items()},
        "stats_leader_403_body": {n: r.json() for n, r in leader_stats.items() if r.status_code == 403},
        "followers_listed": sorted(leader_stats[leader.name].json()["followers"]),
        "members_leader": {p.name: get(p, "/v2/members/leader").json()["name"] for p in c.procs},
        "machines": {p.name: get(p, "/v2/machines").text for p in c.procs},
        "leader": leader,
    }


def check_fresh_view(c: Cluster, view: dict[str, Any]) -> None:
    leader: ServerProc = view["leader"]
    assert view["first_v2_headers"] == {p.name: ("7", "8", "2") for p in c.procs}
    assert view["stats_leader_status"] == {p.name: 200 if p is leader else 403 for p in c.procs}
    assert all(b == {"message": "not current leader"} for b in view["stats_leader_403_body"].values())
    assert len(view["followers_listed"]) == 2
    assert view["members_leader"] == {p.name: leader.name for p in c.procs}
    urls = ", ".join(sorted(p.client_url for p in c.procs))
    assert view["machines"] == {p.name: urls for p in c.procs}


def test_fresh_cluster_elects_one_leader_and_starts_at_index_7(cluster: Cluster) -> None:
    view = fresh_view(cluster)
    check_fresh_view(cluster, view)
    leader = view["leader"]
    ids = {cluster.self_stats(p)["id"] for p in cluster.procs}
    followers = get(leader, "/v2/stats/leader").json()["followers"]
    assert set(followers) == ids - {cluster.self_stats(leader)["id"]}
    assert all(f["counts"]["success"] > 0 for f in followers.values())
    for p in cluster.procs:
        assert get(p, "/health").json() == {"health": "true"}


@pytest.mark.diff
def test_fresh_cluster_matches_etcd(make_cluster: Callable[..., Cluster]) -> None:
    """The same fresh-cluster probe against etcd 3.4 and etcdpy (skips locally without etcd)."""
    for etcd in (True, False):
        c = make_cluster(etcd=etcd)
        c.start()
        try:
            check_fresh_view(c, fresh_view(c))
        finally:
            c.stop_all()


def test_writes_on_every_member_are_readable_on_every_member(cluster: Cluster) -> None:
    for i, p in enumerate(cluster.procs):
        r = put_v2(p, f"k{i}", f"from-{p.name}")
        assert r.status_code == 201, r.text
        assert r.json()["node"]["value"] == f"from-{p.name}"
        # A quorum read on every member sees the write at once (it goes through the log).
        for q in cluster.procs:
            r = get(q, f"/v2/keys/k{i}?quorum=true")
            assert r.status_code == 200, (q.name, r.text)
            assert r.json()["node"]["value"] == f"from-{p.name}"
        # v3: a put on this member; a linearizable range on every member sees it.
        r = post_v3(p, "/v3/kv/put", {"key": b64("v3key"), "value": b64(p.name)})
        assert r.status_code == 200, r.text
        rev = int(r.json()["header"]["revision"])
        for q in cluster.procs:
            r = post_v3(q, "/v3/kv/range", {"key": b64("v3key")})
            kv = r.json()["kvs"][0]
            assert (kv["value"], int(kv["mod_revision"])) == (b64(p.name), rev), q.name
    # Local (serializable) reads converge within a short wait.
    for q in cluster.procs:

        def caught_up(q: ServerProc = q) -> bool | None:
            values = [get(q, f"/v2/keys/k{i}").json().get("node", {}).get("value") for i in range(3)]
            return True if values == [f"from-{p.name}" for p in cluster.procs] else None

        wait_for(f"{q.name} to apply the writes", caught_up, 5.0)
        r = post_v3(q, "/v3/kv/range", {"key": b64("v3key"), "serializable": True})
        assert r.json()["kvs"][0]["value"] == b64(cluster.procs[-1].name)
    # Request ids are unique across members: every write answered with its own result.
    indices = {get(cluster.procs[0], f"/v2/keys/k{i}").json()["node"]["modifiedIndex"] for i in range(3)}
    assert len(indices) == 3


def test_kill9_leader_elects_new_leader_and_old_leader_catches_up(cluster: Cluster) -> None:
    old = cluster.leader()
    assert put_v2(old, "before", "1").status_code == 201
    survivors = [p for p in cluster.procs if p is not old]
    killed_at = time.monotonic()
    old.kill9()
    new = cluster.leader(among=survivors, timeout_s=6 * ELECTION_TIMEOUT_S)
    elected_s = time.monotonic() - killed_at
    assert new is not old
    assert elected_s < 6 * ELECTION_TIMEOUT_S
    # Writes continue on both survivors (the follower forwards to the new leader).
    for i, p in enumerate(survivors):
        r = put_v2(p, f"during{i}", p.name)
        assert r.status_code == 201, r.text
        assert int(r.headers["x-raft-term"]) > 2
    r = post_v3(survivors[0], "/v3/kv/put", {"key": b64("during-v3"), "value": b64("x")})
    assert r.status_code == 200, r.text
    # The old leader restarts from its data dir and catches up.
    old.spawn()
    cluster.wait_serving(old)

    def caught_up() -> bool | None:
        values = [get(old, f"/v2/keys/during{i}").json().get("node", {}).get("value") for i in range(2)]
        return True if values == [p.name for p in survivors] else None

    wait_for("the restarted member to catch up", caught_up, 10.0)
    assert get(old, "/v2/keys/before").json()["node"]["value"] == "1"
    r = post_v3(old, "/v3/kv/range", {"key": b64("during-v3"), "serializable": True})
    assert r.json()["kvs"][0]["value"] == b64("x")
    assert cluster.leader() is new  # a rejoining member does not disrupt the leader (pre-vote)
    assert put_v2(old, "after", "ok").status_code == 201


def test_sigterm_whole_cluster_and_restart_keeps_data(cluster: Cluster) -> None:
    for i, p in enumerate(cluster.procs):
        assert put_v2(p, f"durable{i}", p.name).status_code == 201
    r = post_v3(cluster.procs[1], "/v3/kv/put", {"key": b64("durable-v3"), "value": b64("v")})
    rev = int(r.json()["header"]["revision"])
    index_before = int(get(cluster.procs[0], "/v2/keys/durable2?quorum=true").headers["x-etcd-index"])
    for p in cluster.procs:
        assert p.stop() == 0, p.stderr_tail()  # SIGTERM: a clean exit
    assert all(p.popen is not None and p.popen.returncode == 0 for p in cluster.procs)
    cluster.start()
    cluster.leader()
    for q in cluster.procs:
        for i, p in enumerate(cluster.procs):
            r = get(q, f"/v2/keys/durable{i}?quorum=true")
            assert r.json()["node"]["value"] == p.name, (q.name, r.text)
        kv = post_v3(q, "/v3/kv/range", {"key": b64("durable-v3")}).json()["kvs"][0]
        assert (kv["value"], int(kv["mod_revision"])) == (b64("v"), rev)
    # Each member publishes its attributes again on start (+3), as etcd does; nothing is lost.
    r = get(cluster.procs[2], "/v2/keys/?quorum=true")
    assert int(r.headers["x-etcd-index"]) == index_before + 3
