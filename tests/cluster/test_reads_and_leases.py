"""Linearizable reads through ReadIndex, and lease keepalive/timetolive on followers.

Real processes on loopback (ports 27000-27999), stopped by pid in the fixture finalizer.
"""

from __future__ import annotations

import base64
import time

import httpx

from tests.cluster.helpers import HTTP_TIMEOUT, Cluster, post_v3, wait_for
from tests.support.procs import ServerProc


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def raft_index(p: ServerProc) -> int:
    r = post_v3(p, "/v3/maintenance/status", {})
    assert r.status_code == 200, r.text
    return int(r.json()["raftIndex"])


def test_linearizable_range_on_follower_sees_write_and_appends_no_entry(cluster: Cluster) -> None:
    leader = cluster.leader()
    followers = [p for p in cluster.procs if p is not leader]
    for i in range(5):
        writer, reader = followers[i % 2], followers[(i + 1) % 2]
        r = post_v3(writer, "/v3/kv/put", {"key": b64("ri"), "value": b64(f"v{i}")})
        assert r.status_code == 200, r.text
        rev = int(r.json()["header"]["revision"])
        r = post_v3(reader, "/v3/kv/range", {"key": b64("ri")})
        assert r.status_code == 200, r.text
        kv = r.json()["kvs"][0]
        assert (kv["value"], int(kv["mod_revision"])) == (b64(f"v{i}"), rev)

    # Linearizable ranges on every member move no raft index: no Noop entry per read.
    def agreed() -> dict[str, int] | None:
        indices = {p.name: raft_index(p) for p in cluster.procs}
        return indices if len(set(indices.values())) == 1 else None

    before = wait_for("raft indices to agree", agreed, 5.0)
    for _ in range(10):
        for p in cluster.procs:
            r = post_v3(p, "/v3/kv/range", {"key": b64("ri")})
            assert r.status_code == 200 and r.json()["kvs"][0]["value"] == b64("v4"), r.text
    after = {p.name: raft_index(p) for p in cluster.procs}
    assert after == before


def _peer_post(p: ServerProc, route: str, body: dict[str, object], cluster_id: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{p.peer_port}{route}",
        json=body,
        headers={"X-Etcd-Cluster-Id": cluster_id},
        timeout=HTTP_TIMEOUT,
    )


def test_lease_keepalive_and_timetolive_on_follower(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(p for p in cluster.procs if p is not leader)
    r = post_v3(follower, "/v3/lease/grant", {"TTL": 3})
    assert r.status_code == 200, r.text
    lease = r.json()["ID"]
    r = post_v3(follower, "/v3/kv/put", {"key": b64("leased"), "value": b64("x"), "lease": lease})
    assert r.status_code == 200, r.text
    # Keepalives on the follower (forwarded to the leader) keep the lease past its TTL.
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        r = post_v3(follower, "/v3/lease/keepalive", {"ID": lease})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result.get("TTL") == "3", r.text
        time.sleep(0.8)
    r = post_v3(follower, "/v3/kv/range", {"key": b64("leased")})
    assert r.json().get("kvs"), r.text
    r = post_v3(follower, "/v3/lease/timetolive", {"ID": lease, "keys": True})
    assert r.status_code == 200, r.text
    o = r.json()
    assert 0 < int(o["TTL"]) <= 3 and o["grantedTTL"] == "3" and o["keys"] == [b64("leased")], o
    # The peer route itself: the leader answers with its own view, a follower names the leader,
    # another cluster's ID is refused.
    cid = format(int(r.json()["header"]["cluster_id"]), "x")
    lr = _peer_post(leader, "/lease/timetolive", {"ID": int(lease), "keys": True}, cid)
    assert lr.status_code == 200, lr.text
    lo = lr.json()
    assert lo["found"] and 0 <= lo["TTL"] <= 3 and lo["grantedTTL"] == 3
    assert lo["keys"] == [b64("leased")]
    kr = _peer_post(leader, "/lease/keepalive", {"ID": int(lease)}, cid)
    assert kr.status_code == 200 and kr.json() == {"TTL": 3}, kr.text
    assert _peer_post(leader, "/lease/keepalive", {"ID": 12345}, cid).json() == {"TTL": 0}
    fr = _peer_post(follower, "/lease/keepalive", {"ID": int(lease)}, cid)
    assert fr.status_code == 409, fr.text
    assert _peer_post(leader, "/lease/keepalive", {"ID": int(lease)}, "1234").status_code == 412
    assert _peer_post(leader, "/lease/keepalive", {"nope": 1}, cid).status_code == 400
    # Without keepalives the leader revokes it: the key goes, on the follower too.
    wait_for(
        "the lease to expire",
        lambda: (
            True if not post_v3(follower, "/v3/kv/range", {"key": b64("leased")}).json().get("kvs") else None
        ),
        10.0,
        0.2,
    )
    r = post_v3(follower, "/v3/lease/keepalive", {"ID": lease})
    assert r.status_code == 200 and "TTL" not in r.json()["result"], r.text
