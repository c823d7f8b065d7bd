"""Data written through both APIs survives kill -9: v2 keys and v3 MVCC state (revisions,
versions, leases, compaction) come back intact, and both counters continue where they stopped.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.crash.helpers import HTTP_TIMEOUT, Servers, restart_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def v3(c: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(path, json=body)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    out: dict[str, Any] = r.json()
    return out


def snapshot_view(c: httpx.Client) -> dict[str, Any]:
    everything = v3(c, "/v3/kv/range", {"key": b64("\0"), "range_end": b64("\0")})
    at_old = v3(c, "/v3/kv/range", {"key": b64("k"), "revision": "4"})
    v2 = c.get("/v2/keys/app", params={"recursive": "true", "sorted": "true"}).json()
    leases = sorted(int(x["ID"]) for x in v3(c, "/v3/lease/leases", {}).get("leases", []))
    return {"kvs": everything["kvs"], "at_old": at_old.get("kvs"), "v2": v2, "leases": leases}


@pytest.mark.parametrize("snapshot_count", [None, "5"])
def test_v2_and_v3_survive_kill9(servers: Servers, snapshot_count: str | None) -> None:
    extra = ("--snapshot-count", snapshot_count) if snapshot_count else ()
    proc = servers.fresh(extra=extra)
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        for i in range(3):
            v3(c, "/v3/kv/put", {"key": b64("k"), "value": b64(f"v{i}")})  # revisions 2, 3, 4
        v3(c, "/v3/kv/put", {"key": b64("other"), "value": b64("o")})
        lease = v3(c, "/v3/lease/grant", {"TTL": "3600"})
        v3(c, "/v3/kv/put", {"key": b64("leased"), "value": b64("l"), "lease": lease["ID"]})
        v3(c, "/v3/kv/deleterange", {"key": b64("other")})
        v3(c, "/v3/kv/compaction", {"revision": "3"})
        assert c.put("/v2/keys/app/a", data={"value": "1"}).status_code == 201
        assert c.put("/v2/keys/app/d/b", data={"value": "2"}).status_code == 201
        before = snapshot_view(c)
        rev_before = int(v3(c, "/v3/kv/range", {"key": b64("k")})["header"]["revision"])
        index_before = int(c.get("/v2/keys/app/a").headers["x-etcd-index"])
    assert before["at_old"][0]["value"] == b64("v2")
    proc.kill9()
    restart_ready(proc)
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        assert snapshot_view(c) == before
        # below the compaction point is still compacted after the restart
        r = c.post("/v3/kv/range", json={"key": b64("k"), "revision": "2"})
        assert r.status_code == 400 and "compacted" in r.json()["message"]
        # both counters continue: the v3 revision exactly, the v2 index after the member's publish
        put = v3(c, "/v3/kv/put", {"key": b64("after"), "value": b64("x")})
        assert int(put["header"]["revision"]) == rev_before + 1
        w = c.put("/v2/keys/app/after", data={"value": "x"})
        assert w.status_code == 201
        assert int(w.headers["x-etcd-index"]) == index_before + 2
        ttl = v3(c, "/v3/lease/timetolive", {"ID": before["leases"][0], "keys": True})
        assert ttl["keys"] == [b64("leased")] and 0 < int(ttl["TTL"]) <= 3600
