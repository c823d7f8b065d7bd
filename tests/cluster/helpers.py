"""A 3-member cluster of real processes on loopback, for the cluster tests.

Every process is started through tests/support/procs.py (own process group, logs in the test's
tmp dir) and is stopped by its own pid in ``Cluster.stop_all()`` (a fixture finalizer). Ports
come from 27000-27999, this suite's range. The same flags start etcd or etcdpy, so a test can
run one scenario against both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.httpserver import serve_asgi
from app.server import _bind as bind_listener  # the bind etcdpy's ports get
from tests.support.procs import ServerProc, ServerStartError, etcd_flags, port_allocator

CLUSTER_PORTS = port_allocator(27000, 28000)
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
START_TIMEOUT_S = 30.0
TOKEN = "etcdpy-cluster-test"
NAMES = ("c1", "c2", "c3")

T = TypeVar("T")


@contextlib.asynccontextmanager
async def serve_peer_port(app: Callable[..., Awaitable[None]]) -> AsyncIterator[str]:
    """Serve an ASGI app on a loopback port of this suite as etcdpy serves its peer port (the
    lean HTTP server, no server-side body limit: the peer app checks its own); yields its URL."""
    (port,) = CLUSTER_PORTS.allocate(1)
    sock = bind_listener(f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve_asgi(app, [sock], keep_alive_s=120, stop=stop, graceful_s=1, max_body_bytes=-1)
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        sock.close()


def wait_for(what: str, fn: Callable[[], T | None], timeout_s: float, interval_s: float = 0.05) -> T:
    """Poll fn() until it returns something other than None (or raise after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while True:
        try:
            value = fn()
            if value is not None:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.1f}s waiting for {what} (last error {last_exc!r})"
            )
        time.sleep(interval_s)


def get(proc: ServerProc, path: str, timeout: httpx.Timeout = HTTP_TIMEOUT) -> httpx.Response:
    return httpx.get(proc.client_url + path, timeout=timeout)


def put_v2(proc: ServerProc, key: str, value: str) -> httpx.Response:
    return httpx.put(f"{proc.client_url}/v2/keys/{key}", data={"value": value}, timeout=HTTP_TIMEOUT)


def post_v3(proc: ServerProc, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proc.client_url + path, json=body, timeout=HTTP_TIMEOUT)


def member_proc(
    cmd: Sequence[str],
    root: Path,
    name: str,
    initial_cluster: str,
    state: str,
    ports: tuple[int, int],
    extra: Sequence[str] = (),
) -> ServerProc:
    """One member (not started) with etcd's cluster flags; its files under root/name."""
    client_port, peer_port = ports
    run_dir = root / name
    flags = etcd_flags(
        name,
        run_dir / "data",
        client_port,
        peer_port,
        initial_cluster=initial_cluster,
        cors=None,
        extra=["--initial-cluster-state", state, "--initial-cluster-token", TOKEN, *extra],
    )
    return ServerProc(
        cmd=list(cmd),
        flags=flags,
        name=name,
        client_port=client_port,
        peer_port=peer_port,
        data_dir=run_dir / "data",
        log_dir=run_dir,
    )


@dataclass
class Cluster:
    cmd: list[str]
    workdir: Path
    procs: list[ServerProc] = field(default_factory=list)

    def create(self, extra: Sequence[str] = ()) -> None:
        ports = CLUSTER_PORTS.allocate(2 * len(NAMES))
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(NAMES))
        for i, name in enumerate(NAMES):
            ports_i = (ports[2 * i], ports[2 * i + 1])
            self.procs.append(member_proc(self.cmd, self.workdir, name, initial, "new", ports_i, extra))

    def start(self, procs: Sequence[ServerProc] | None = None) -> None:
        """Spawn (all or some) members, then wait until each serves and a version is decided."""
        targets = list(procs if procs is not None else self.procs)
        for p in targets:
            p.spawn()
        for p in targets:
            self.wait_serving(p)

    def wait_serving(self, proc: ServerProc, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until GET /version answers with a decided cluster version (no v2 request is made)."""

        def decided() -> bool | None:
            if not proc.alive():
                raise ServerStartError(f"{proc.name} exited\n{proc.stderr_tail()}")
            r = get(proc, "/version", httpx.Timeout(2.0))
            return True if r.status_code == 200 and r.json()["etcdcluster"] != "not_decided" else None

        try:
            wait_for(f"{proc.name} to serve clients", decided, timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{proc.stderr_tail()}") from None

    @property
    def alive(self) -> list[ServerProc]:
        return [p for p in self.procs if p.alive()]

    def self_stats(self, proc: ServerProc) -> dict[str, Any]:
        r = get(proc, "/v2/stats/self")
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    def leader(self, among: Sequence[ServerProc] | None = None, timeout_s: float = 10.0) -> ServerProc:
        """The one member that every member in `among` (default: all alive) names as leader."""
        members = list(among if among is not None else self.alive)

        def agreed() -> ServerProc | None:
            stats = {p.name: self.self_stats(p) for p in members}
            leaders = {s["leaderInfo"]["leader"] for s in stats.values()}
            states = [p for p in members if stats[p.name]["state"] == "StateLeader"]
            if len(leaders) != 1 or len(states) != 1 or stats[states[0].name]["id"] not in leaders:
                return None
            return states[0]

        return wait_for("one agreed leader", agreed, timeout_s)

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


# ---- faults: partitions, pauses, convergence, a write load (tests/cluster/test_faults.py) ------

# Faster than etcd's defaults (100/1000 ms), so that elections fit many times into a test; etcd
# and etcdpy both accept them. ELECTION_TIMEOUT_S matches --election-timeout.
FAST_FLAGS: tuple[str, ...] = ("--heartbeat-interval", "50", "--election-timeout", "500")
ELECTION_TIMEOUT_S = 0.5
FAULTS_FLAG = "--unsafe-test-faults"  # etcdpy only (app/faults.py); etcd has no such flag
START_ATTEMPTS = 3


@contextlib.contextmanager
def running_cluster(cmd: Sequence[str], workdir: Path, extra: Sequence[str] = ()) -> Iterator[Cluster]:
    """A started 3-member cluster; on exit every paused member is resumed, then all are stopped.

    A start that loses a port to another process between allocation and bind (other suites
    share the machine) is retried on fresh ports, in a fresh directory.
    """
    clusters: list[Cluster] = []
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            c = Cluster(list(cmd), workdir / f"try{attempt}" if attempt > 1 else workdir)
            clusters.append(c)
            c.create(extra=extra)
            try:
                c.start()
                break
            except (ServerStartError, AssertionError) as exc:
                c.stop_all()
                if "address already in use" not in str(exc).lower() or attempt == START_ATTEMPTS:
                    raise
        yield clusters[-1]
    finally:
        for c in clusters:
            for p in c.procs:
                resume(p)  # SIGTERM would wait out its whole bound on a stopped process
            c.stop_all()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def member_id(c: Cluster, proc: ServerProc) -> str:
    """The member id in hex, as /v2/members and the fault table spell it."""
    return str(c.self_stats(proc)["id"])


def set_faults(
    proc: ServerProc, drop: Sequence[str] = (), delay_ms: dict[str, int] | None = None
) -> dict[str, Any]:
    """Replace `proc`'s fault table (app/faults.py); an empty table heals it."""
    r = httpx.put(
        proc.client_url + "/debug/faults",
        json={"drop": list(drop), "delay_ms": delay_ms or {}},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 200, r.text
    table: dict[str, Any] = r.json()
    return table


def isolate(c: Cluster, victim: ServerProc) -> None:
    """Cut `victim` off from every other member, on both sides of each link."""
    ids = {p.name: member_id(c, p) for p in c.procs}
    others = [p for p in c.procs if p is not victim]
    set_faults(victim, [ids[p.name] for p in others])
    for p in others:
        set_faults(p, [ids[victim.name]])


def heal(c: Cluster) -> None:
    for p in c.alive:
        set_faults(p)


def pause(proc: ServerProc) -> None:
    """SIGSTOP our own server process (by its pid, never by name)."""
    if proc.popen is not None and proc.popen.poll() is None:
        os.kill(proc.popen.pid, signal.SIGSTOP)


def resume(proc: ServerProc) -> None:
    if proc.popen is not None and proc.popen.poll() is None:
        os.kill(proc.popen.pid, signal.SIGCONT)


def raft_status(proc: ServerProc, timeout: httpx.Timeout = HTTP_TIMEOUT) -> dict[str, Any]:
    """/v3/maintenance/status: leader, raftTerm, raftIndex, raftAppliedIndex (a local read)."""
    r = httpx.post(proc.client_url + "/v3/maintenance/status", json={}, timeout=timeout)
    r.raise_for_status()
    status: dict[str, Any] = r.json()
    return status


def converged(procs: Sequence[ServerProc], timeout_s: float) -> tuple[int, int]:
    """Wait until every member serves the same v2 index and v3 revision from its local state
    (twice in a row, so a write still being applied is not mistaken for the end); returns them."""
    last: list[tuple[int, int]] = []

    def same() -> tuple[int, int] | None:
        seen = set()
        for p in procs:
            idx = int(get(p, "/v2/keys/").headers["x-etcd-index"])
            r = post_v3(p, "/v3/kv/range", {"key": b64("-"), "serializable": True})
            seen.add((idx, int(r.json()["header"]["revision"])))
        if len(seen) != 1:
            last.clear()
            return None
        view = seen.pop()
        agreed = view if last == [view] else None
        last[:] = [view]
        return agreed

    return wait_for(f"{', '.join(p.name for p in procs)} to converge", same, timeout_s, 0.2)


def read_prefix_v2(proc: ServerProc, prefix: str) -> dict[str, str]:
    """Every key under the v2 directory /prefix, from local state: {"/prefix/k": value}."""
    r = get(proc, f"/v2/keys/{prefix}?recursive=true")
    if r.status_code == 404:
        return {}
    assert r.status_code == 200, r.text
    return {n["key"]: n["value"] for n in r.json()["node"].get("nodes", [])}


def read_prefix_v3(proc: ServerProc, prefix: str) -> dict[str, str]:
    """Every v3 key starting with `prefix` + "/", from local state."""
    body = {"key": b64(prefix + "/"), "range_end": b64(prefix + "0"), "serializable": True}
    r = post_v3(proc, "/v3/kv/range", body)
    assert r.status_code == 200, r.text
    return {unb64(kv["key"]): unb64(kv["value"]) for kv in r.json().get("kvs", [])}


LOAD_TIMEOUT = httpx.Timeout(10.0, connect=1.0)


@dataclass
class WriteLoad:
    """Client threads writing fresh keys over v2 and v3 to every member; what was acknowledged.

    Thread t writes to member t % n (moving on to the next member when that one refuses the
    connection), over v2 for the first n threads and v3 for the rest. Each key is written once,
    so "acknowledged" means exactly one value that every member must hold afterwards.
    """

    procs: Sequence[ServerProc]
    threads: int = 6
    prefix: str = "load"
    acked_v2: dict[str, str] = field(default_factory=dict)  # "/load/t0-1" -> value
    acked_v3: dict[str, str] = field(default_factory=dict)  # "load/t3-1" -> value
    ack_times: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for t in range(self.threads):
            w = threading.Thread(target=self._run, args=(t,), name=f"load-{t}", daemon=True)
            w.start()
            self._workers.append(w)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout_s)
        assert not any(w.is_alive() for w in self._workers), "a load thread did not finish"

    def acked_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for a in self.ack_times if a >= t)

    @property
    def acked(self) -> int:
        with self._lock:
            return len(self.acked_v2) + len(self.acked_v3)

    def _run(self, t: int) -> None:
        n = len(self.procs)
        member = t % n
        v3 = t >= n
        i = 0
        with httpx.Client(timeout=LOAD_TIMEOUT) as client:
            while not self._stop.is_set():
                i += 1
                key, value = f"{self.prefix}/t{t}-{i}", f"v{t}-{i}"
                url = self.procs[member].client_url
                try:
                    if v3:
                        r = client.post(url + "/v3/kv/put", json={"key": b64(key), "value": b64(value)})
                    else:
                        r = client.put(f"{url}/v2/keys/{key}", data={"value": value})
                except httpx.ConnectError:
                    member = (member + 1) % n  # down: nothing was sent, try another member
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError:
                    r = None
                if r is None or r.status_code not in (200, 201):
                    with self._lock:
                        self.failures += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if v3:
                        self.acked_v3[key] = value
                    else:
                        self.acked_v2["/" + key] = value  # as v2 names it: from the root
                    self.ack_times.append(time.monotonic())

    def verify(self, procs: Sequence[ServerProc]) -> None:
        """Every acknowledged write is on every member in `procs`, with its value."""
        for p in procs:
            v2 = read_prefix_v2(p, self.prefix)
            v3 = read_prefix_v3(p, self.prefix)
            lost2 = {k: v for k, v in self.acked_v2.items() if v2.get(k) != v}
            lost3 = {k: v for k, v in self.acked_v3.items() if v3.get(k) != v}
            assert not lost2 and not lost3, (
                f"{p.name} lost {len(lost2)} v2 and {len(lost3)} v3 acknowledged writes, e.g. "
                f"{sorted(lost2.items())[:3]} {sorted(lost3.items())[:3]}"
            )
