"""Restarts keep the v2 store exactly, and move the indices the way etcd's do.

Data of every v2 shape (plain keys, nested and empty directories, long-TTL keys and directories,
in-order keys, updated, CAS'd and deleted keys) survives a SIGTERM restart and a kill -9 restart
unchanged, expirations included (the remaining TTL may only go down), both when the store is
rebuilt by replaying the WAL and when it is loaded from a snapshot (``--snapshot-count 5``). etcd publishes the
member's attributes on every start (one v2 write under /0), so X-Etcd-Index is exactly one more
after each restart; the member campaigns again, so X-Raft-Term grows on each restart; and the
next write continues right after.

SIGTERM is a graceful stop even with a v2 long-poll watch and a v2 stream watch open: the
process exits 0 within 5 s, and both watch responses end cleanly (200, complete chunked body).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.crash.helpers import HTTP_TIMEOUT, Servers
from tests.support.procs import ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PREFIX = "/rs"
LONG_TTL = "3600"
INDEX_SETTLE_S = 5.0
SHUTDOWN_BOUND_S = 5.0


def populate(c: httpx.Client) -> None:
    def ok(r: httpx.Response) -> None:
        assert r.is_success, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"

    ok(c.put(f"/v2/keys{PREFIX}/a", data={"value": "1"}))
    ok(c.put(f"/v2/keys{PREFIX}/a", data={"value": "1b"}))
    ok(c.put(f"/v2/keys{PREFIX}/b", data={"value": "2"}))
    ok(c.put(f"/v2/keys{PREFIX}/b", params={"prevValue": "2"}, data={"value": "2cas"}))
    ok(c.put(f"/v2/keys{PREFIX}/dir/sub/leaf", data={"value": "deep"}))
    ok(c.put(f"/v2/keys{PREFIX}/dir/other", data={"value": "x y&z=%"}))
    ok(c.put(f"/v2/keys{PREFIX}/empty", data={"dir": "true"}))
    ok(c.put(f"/v2/keys{PREFIX}/ttl-key", data={"value": "t", "ttl": LONG_TTL}))
    ok(c.put(f"/v2/keys{PREFIX}/ttl-dir", data={"dir": "true", "ttl": LONG_TTL}))
    ok(c.put(f"/v2/keys{PREFIX}/ttl-dir/in", data={"value": "inside"}))
    for i in range(3):
        ok(c.post(f"/v2/keys{PREFIX}/queue", data={"value": f"job{i}"}))
    ok(c.put(f"/v2/keys{PREFIX}/gone", data={"value": "soon"}))
    ok(c.delete(f"/v2/keys{PREFIX}/gone"))
    ok(c.put(f"/v2/keys{PREFIX}/empty-file", data={"value": ""}))


@dataclass(frozen=True)
class View:
    tree: dict[str, Any]  # the recursive GET's node, remaining TTLs split out
    ttls: dict[str, int]
    index: int  # X-Etcd-Index
    term: int  # X-Raft-Term


def _split_ttls(node: dict[str, Any], ttls: dict[str, int]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in ("ttl", "nodes")}
    if "ttl" in node:
        ttls[node["key"]] = node["ttl"]
    if "nodes" in node:
        out["nodes"] = [_split_ttls(child, ttls) for child in node["nodes"]]
    return out


def view(proc: ServerProc) -> View:
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        r = c.get(f"/v2/keys{PREFIX}", params={"recursive": "true", "sorted": "true"})
    assert r.status_code == 200, r.text
    ttls: dict[str, int] = {}
    tree = _split_ttls(r.json()["node"], ttls)
    return View(tree, ttls, int(r.headers["x-etcd-index"]), int(r.headers["x-raft-term"]))


def view_after_restart(proc: ServerProc, before: View) -> View:
    """Wait (bounded) for the member publish to land, then a little longer for any extra write."""
    deadline = time.monotonic() + INDEX_SETTLE_S
    v = view(proc)
    while v.index <= before.index and time.monotonic() < deadline:
        time.sleep(0.05)
        v = view(proc)
    time.sleep(0.3)
    return view(proc)


def check_restart(proc: ServerProc, before: View, how: str) -> View:
    after = view_after_restart(proc, before)
    context = f"after {how} restart\n{proc.stderr_tail(10)}"
    assert after.tree == before.tree, f"store changed {context}"
    assert set(after.ttls) == set(before.ttls), f"TTL'd nodes changed {context}"
    for key, ttl in after.ttls.items():
        assert 0 < ttl <= before.ttls[key], f"{key}: ttl {before.ttls[key]} -> {ttl} {context}"
    assert after.index == before.index + 1, (
        f"X-Etcd-Index {before.index} -> {after.index}; etcd adds exactly 1 (the member publish) {context}"
    )
    assert after.term > before.term, f"X-Raft-Term {before.term} -> {after.term} did not grow {context}"
    return after


@pytest.mark.parametrize(
    "extra",
    [pytest.param((), id="wal-replay"), pytest.param(("--snapshot-count", "5"), id="from-snapshot")],
)
def test_store_and_indices_survive_sigterm_and_kill9_restarts(
    servers: Servers, extra: tuple[str, ...]
) -> None:
    proc = servers.fresh(extra=extra)
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        populate(c)
    v0 = view(proc)
    assert {"a", "b", "dir", "empty", "ttl-key", "ttl-dir", "queue", "empty-file"} == {
        n["key"].rsplit("/", 1)[1] for n in v0.tree["nodes"]
    }, v0.tree
    assert set(v0.ttls) == {f"{PREFIX}/ttl-key", f"{PREFIX}/ttl-dir"}, v0.ttls

    if extra:
        snaps = list((proc.data_dir / "member" / "snap").glob("*.snap"))
        assert snaps, "no snapshot file: the restarts would not load the store from a snapshot"

    rc = proc.stop(timeout=SHUTDOWN_BOUND_S)
    assert rc == 0, f"SIGTERM exit status {rc}\n{proc.stderr_tail()}"
    proc.spawn()
    proc.wait_ready()
    v1 = check_restart(proc, v0, "SIGTERM")

    rc = proc.kill9()
    assert rc == -9, f"exit status {rc}"
    proc.spawn()
    proc.wait_ready()
    v2 = check_restart(proc, v1, "kill -9")

    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        r = c.put(f"/v2/keys{PREFIX}/after", data={"value": "next"})
    assert r.status_code == 201, r.text
    assert r.json()["node"]["modifiedIndex"] == v2.index + 1, (r.json(), v2.index)
    assert int(r.headers["x-etcd-index"]) == v2.index + 1


@dataclass
class WatchResult:
    status: int | None = None
    body: bytes = b""
    error: str | None = None
    ended_cleanly: bool = False


def _watch(
    base_url: str,
    key: str,
    params: dict[str, str],
    res: WatchResult,
    started: threading.Event,
    got_event: threading.Event,
) -> None:
    try:
        with httpx.Client(base_url=base_url, timeout=httpx.Timeout(15.0, connect=2.0)) as c:
            with c.stream("GET", f"/v2/keys{key}", params=params) as r:
                res.status = r.status_code
                started.set()
                for chunk in r.iter_raw():
                    res.body += chunk
                    if b'"action"' in res.body:
                        got_event.set()
        res.ended_cleanly = True
    except httpx.HTTPError as exc:
        res.error = repr(exc)
    finally:
        started.set()


def test_sigterm_ends_open_watches_cleanly_within_bound(servers: Servers) -> None:
    proc = servers.fresh()
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        assert c.put(f"/v2/keys{PREFIX}/w/seed", data={"value": "0"}).is_success

    specs = {
        "long-poll": (f"{PREFIX}/never", {"wait": "true"}),
        "stream": (f"{PREFIX}/w", {"wait": "true", "recursive": "true", "stream": "true"}),
    }
    results = {name: WatchResult() for name in specs}
    started = {name: threading.Event() for name in specs}
    events = {name: threading.Event() for name in specs}
    threads = [
        threading.Thread(
            target=_watch,
            args=(proc.client_url, key, params, results[name], started[name], events[name]),
            name=f"watch-{name}",
            daemon=True,
        )
        for name, (key, params) in specs.items()
    ]
    for t in threads:
        t.start()
    for name in specs:
        assert started[name].wait(5), f"{name} watch got no response headers"
        assert results[name].status == 200, (name, results[name])
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        assert c.put(f"/v2/keys{PREFIX}/w/one", data={"value": "1"}).is_success
    assert events["stream"].wait(5), f"stream watch saw no event: {results['stream']}"
    assert not events["long-poll"].is_set(), results["long-poll"]

    t0 = time.monotonic()
    rc = proc.stop(timeout=SHUTDOWN_BOUND_S)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(timeout=5)
    assert rc == 0, f"not a clean SIGTERM exit within {SHUTDOWN_BOUND_S}s (status {rc})\n{proc.stderr_tail()}"
    assert elapsed < SHUTDOWN_BOUND_S, f"SIGTERM took {elapsed:.1f}s"
    assert not any(t.is_alive() for t in threads), f"watch responses still open after exit: {results}"
    for name, res in results.items():
        assert res.ended_cleanly and res.error is None, f"{name} watch did not end cleanly: {res}"
    assert results["stream"].body.count(b'"action"') == 1, results["stream"].body


def test_restart_with_other_urls_keeps_the_member_identity(servers: Servers) -> None:
    proc = servers.fresh()
    with httpx.Client(base_url=proc.client_url, timeout=HTTP_TIMEOUT) as c:
        before = c.get("/v2/members").json()["members"]
    assert len(before) == 1, before
    assert proc.stop() == 0

    moved = servers.on_data_dir(proc, proc.data_dir, tag="moved", new_ports=True)
    moved.spawn()
    moved.wait_ready()
    with httpx.Client(base_url=moved.client_url, timeout=HTTP_TIMEOUT) as c:
        after = c.get("/v2/members").json()["members"]
    # etcd 3.4: same id and peer URLs (changing those takes `member update`); clientURLs are
    # republished from the new flags.
    assert [m["id"] for m in after] == [before[0]["id"]], after
    assert after[0]["peerURLs"] == before[0]["peerURLs"], after
    assert after[0]["clientURLs"] == [moved.client_url], after
