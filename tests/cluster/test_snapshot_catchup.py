"""A follower that missed more than the leader keeps in its log catches up through a snapshot.

Three etcdpy processes with --snapshot-count 100: the leader snapshots every 100 entries and
keeps CATCH_UP entries behind each snapshot (--experimental-snapshot-catchup-entries, etcd
3.5's flag; the default, 5000 as in etcd, takes too long to write past on a busy machine). One follower is stopped, the others take more than that many writes (v2 sets, v3
puts, deletes, a lease), so the leader's log no longer reaches back to the stopped follower's
last entry. On restart the follower can only
be caught up by a snapshot: sent on the leader's /raft/snapshot route (leader's log), restored
by the follower (its log and snap dir), after which both members answer the same. Later writes
then reach it through the log again.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.helpers import HTTP_TIMEOUT, Cluster, get, post_v3, wait_for
from tests.support.etcd_ref import require_impl
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SNAPSHOT_COUNT = 100
CATCH_UP = 500  # entries the leader keeps behind a snapshot (etcd: 5000)
WRITERS = 16  # concurrent clients: group commit keeps the many writes short
V3_KEYS = 300  # distinct v3 keys, overwritten again and again (many revisions, small state)
LEASE_TTL_S = 600  # outlives the test: expiry must not race the comparison


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def raft_index(p: ServerProc) -> int:
    return int(get(p, "/v2/keys/").headers["x-raft-index"])


def v2_view(p: ServerProc) -> tuple[str, Any]:
    """A local (serializable) read of the whole v2 tree, and the store index it was read at."""
    r = get(p, "/v2/keys/?recursive=true&sorted=true")
    assert r.status_code == 200, r.text
    return r.headers["x-etcd-index"], r.json()


def v3_view(p: ServerProc) -> tuple[int, list[dict[str, Any]]]:
    """A serializable range over every v3 key: (revision, kvs)."""
    body = {"key": b64("\0"), "range_end": b64("\0"), "serializable": True}
    r = post_v3(p, "/v3/kv/range", body)
    assert r.status_code == 200, r.text
    o = r.json()
    return int(o["header"]["revision"]), o.get("kvs", [])


def write_many(target: ServerProc, n: int, lease_id: str) -> None:
    """n writes (each one log entry) through `target`, from WRITERS threads."""
    local = threading.local()

    def client() -> httpx.Client:
        c: httpx.Client | None = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(base_url=target.client_url, timeout=HTTP_TIMEOUT)
        return c

    def one(i: int) -> None:
        c = client()
        if i % 10 == 0:
            r = c.put(f"/v2/keys/dir/k{i % 500:03d}", data={"value": f"v2-{i}"})
            assert r.status_code in (200, 201), r.text
        elif i % 50 == 7:
            r = c.post("/v3/kv/deleterange", json={"key": b64(f"key{(i // 7) % V3_KEYS:04d}")})
            assert r.status_code == 200, r.text
        elif i % 100 == 3:
            r = c.delete(f"/v2/keys/dir/k{(i - 3) % 500:03d}")
            assert r.status_code in (200, 404), r.text
        else:
            r = c.post("/v3/kv/put", json={"key": b64(f"key{i % V3_KEYS:04d}"), "value": b64(f"v3-{i}")})
            assert r.status_code == 200, r.text
        if i % 200 == 100:
            r = c.post("/v3/kv/put", json={"key": b64(f"leased{i}"), "value": b64("l"), "lease": lease_id})
            assert r.status_code == 200, r.text

    with ThreadPoolExecutor(WRITERS) as pool:
        try:
            for f in [pool.submit(one, i) for i in range(n)]:
                f.result(timeout=60)
        finally:
            pool.shutdown(wait=True)


def log_text(p: ServerProc) -> str:
    return p.stderr_path.read_text(errors="replace")


def started_log(p: ServerProc) -> str:
    """The log of the current run only (each start appends a marker, procs.ServerProc.spawn)."""
    return log_text(p).rsplit("===== start #", 1)[-1]


def test_lagging_follower_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    c = Cluster(require_impl(), tmp_path / "impl")
    c.create(
        extra=[
            "--snapshot-count",
            str(SNAPSHOT_COUNT),
            "--experimental-snapshot-catchup-entries",
            str(CATCH_UP),
        ]
    )
    try:
        run(c)
    finally:
        c.stop_all()


def run(c: Cluster) -> None:
    t0 = time.monotonic()
    c.start()
    leader = c.leader()
    follower = next(p for p in c.procs if p is not leader)
    other = next(p for p in c.procs if p is not leader and p is not follower)
    follower_id = c.self_stats(follower)["id"]
    leader_id = c.self_stats(leader)["id"]
    r = post_v3(leader, "/v3/lease/grant", {"TTL": LEASE_TTL_S})
    assert r.status_code == 200, r.text
    lease_id = r.json()["ID"]
    assert post_v3(leader, "/v3/kv/put", {"key": b64("before"), "value": b64("1")}).status_code == 200

    def in_step() -> bool | None:
        return True if raft_index(follower) == raft_index(leader) else None

    wait_for("the follower to hold every entry", in_step, 5)
    assert follower.stop() == 0, follower.stderr_tail()  # SIGTERM: a clean exit
    stopped_at = raft_index(leader)
    v2_index_at_stop = int(v2_view(leader)[0])

    # Past the stopped follower by more than the leader keeps after a snapshot, plus a few
    # snapshots more: its next entry is then certainly compacted away.
    needed = stopped_at + CATCH_UP + 3 * SNAPSHOT_COUNT
    t_writes = time.monotonic()
    write_many(leader, needed - stopped_at, lease_id)
    writes_s = time.monotonic() - t_writes
    assert raft_index(leader) >= needed

    follower.spawn()
    c.wait_serving(follower)
    # A snapshot was sent, received and restored, its index beyond what the leader still holds.
    sent = wait_for(
        "the leader to log the snapshot it sent",
        lambda: re.search(
            rf"database snapshot \[index: (\d+), to: {follower_id}\] sent out successfully",
            started_log(leader),
        ),
        10,
    )
    snap_index = int(sent.group(1))
    assert snap_index > stopped_at + CATCH_UP
    flog = started_log(follower)
    assert f"received database snapshot [index: {snap_index}, from: {leader_id}] successfully" in flog
    assert re.search(rf"restored snapshot \[index: {snap_index}, term: \d+\]", flog), flog[-3000:]
    snap_files = [p.name for p in (follower.data_dir / "member" / "snap").glob("*.snap")]
    assert any(n.endswith(f"-{snap_index:016x}.snap") for n in snap_files), snap_files

    def same_as_leader() -> bool | None:
        return True if v2_view(follower) == v2_view(leader) and v3_view(follower) == v3_view(leader) else None

    wait_for("the follower to answer like the leader", same_as_leader, 10)
    index, tree = v2_view(follower)
    assert int(index) > v2_index_at_stop + (needed - stopped_at) // 20  # it has the v2 writes it missed
    (v2dir,) = tree["node"]["nodes"]
    assert v2dir["key"] == "/dir" and len(v2dir["nodes"]) > 30  # 50 keys set, a few deleted
    rev, kvs = v3_view(follower)
    keys = {base64.b64decode(kv["key"]).decode() for kv in kvs}
    assert keys >= {"before", "leased100", f"key{V3_KEYS - 1:04d}"}
    assert len(keys) < V3_KEYS + 10  # the deletes were applied too
    leased = [kv for kv in kvs if kv["key"] in (b64("leased100"), b64("leased700"))]
    assert len(leased) == 2 and all(kv["lease"] == lease_id for kv in leased)
    hashes = [post_v3(p, "/v3/maintenance/hash", {}).json() for p in (follower, leader)]
    assert hashes[0]["hash"] == hashes[1]["hash"]

    # From here on the log is enough: more writes (through the other follower, forwarded) arrive
    # without another snapshot; past --snapshot-count of them the caught-up follower takes its
    # own snapshot on top of the one it installed (which once failed: compacting below it).
    write_many(other, 2 * SNAPSHOT_COUNT, lease_id)
    wait_for("the follower to apply the later writes", same_as_leader, 10)
    assert v3_view(follower)[0] > rev
    assert started_log(leader).count(f"to: {follower_id}] sent out successfully") == 1
    after_restore = started_log(follower).split("restored snapshot", 1)[1]
    assert re.search(r"saved snapshot at index \d+", after_restore), after_restore[-3000:]
    assert "receiving database snapshot" not in after_restore
    assert "raft loop stopped" not in after_restore
    total_s = time.monotonic() - t0
    print(f"snapshot catch-up: {needed - stopped_at} writes in {writes_s:.1f}s, whole test {total_s:.1f}s")
    assert total_s < 60
