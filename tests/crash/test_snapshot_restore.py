"""A snapshot streamed by /v3/maintenance/snapshot restores into a new member with
`python -m app.restore`, like `etcdctl snapshot restore`: the v3 keyspace (values, revisions,
leases) comes back; membership and the v2 store start fresh."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from tests.crash.helpers import HTTP_TIMEOUT, Servers, restart_ready
from tests.support.procs import impl_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def download_snapshot(c: httpx.Client, dest: Path) -> None:
    blob = bytearray()
    with c.stream("POST", "/v3/maintenance/snapshot", json={}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.strip():
                blob += base64.b64decode(orjson.loads(line)["result"]["blob"])
    dest.write_bytes(bytes(blob))


def restore(snapshot: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.restore", str(snapshot), "--data-dir", str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_snapshot_restores_into_a_new_member(servers: Servers, tmp_path: Path) -> None:
    if impl_command()[-2:] != ["-m", "app"]:
        pytest.skip("app.restore belongs to etcdpy")
    src = servers.fresh(name="src")
    with httpx.Client(base_url=src.client_url, timeout=HTTP_TIMEOUT) as c:
        for i in range(5):
            c.post("/v3/kv/put", json={"key": b64(f"k{i}"), "value": b64(f"v{i}")}).raise_for_status()
        lease = c.post("/v3/lease/grant", json={"TTL": "3600"}).json()
        c.post(
            "/v3/kv/put", json={"key": b64("leased"), "value": b64("x"), "lease": lease["ID"]}
        ).raise_for_status()
        c.put("/v2/keys/v2only", data={"value": "not in a v3 snapshot"}).raise_for_status()
        before = c.post("/v3/kv/range", json={"key": b64("\0"), "range_end": b64("\0")}).json()
        snap = tmp_path / "snap.db"
        download_snapshot(c, snap)

    restored_dir = tmp_path / "restored.etcd"
    done = restore(snap, restored_dir)
    assert done.returncode == 0, done.stderr
    assert restore(snap, restored_dir).returncode == 1  # never overwrites a data dir

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(snap.read_bytes()[:-1])
    bad = restore(damaged, tmp_path / "never.etcd")
    assert bad.returncode == 1 and "SHA-256" in bad.stderr
    assert not (tmp_path / "never.etcd").exists()

    new = servers.on_data_dir(src, restored_dir, "restored", new_ports=True)
    restart_ready(new)
    with httpx.Client(base_url=new.client_url, timeout=HTTP_TIMEOUT) as c:
        after = c.post("/v3/kv/range", json={"key": b64("\0"), "range_end": b64("\0")}).json()
        assert after["kvs"] == before["kvs"]
        assert after["header"]["revision"] == before["header"]["revision"]
        ttl = c.post("/v3/lease/timetolive", json={"ID": lease["ID"], "keys": True}).json()
        assert ttl["keys"] == [b64("leased")]
        assert c.get("/v2/keys/v2only").status_code == 404  # v2 is not part of a v3 snapshot
        members = c.get("/v2/members").json()["members"]
        assert [m["clientURLs"] for m in members] == [[new.client_url]]
        put = c.post("/v3/kv/put", json={"key": b64("new"), "value": b64("n")}).json()
        assert int(put["header"]["revision"]) == int(before["header"]["revision"]) + 1
