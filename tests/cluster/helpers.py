"""A 3-member cluster of real processes on loopback, for the cluster tests.

Every process is started through tests/support/procs.py (own process group, logs in the test's
tmp dir) and is stopped by its own pid in ``Cluster.stop_all()`` (a fixture finalizer). Ports
come from 27000-27999, this suite's range. The same flags start etcd or etcdpy, so a test can
run one scenario against both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.procs import ServerProc, ServerStartError, etcd_flags, port_allocator

CLUSTER_PORTS = port_allocator(27000, 28000)
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
START_TIMEOUT_S = 30.0
TOKEN = "etcdpy-cluster-test"
NAMES = ("c1", "c2", "c3")

T = TypeVar("T")


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


@dataclass
class Cluster:
    cmd: list[str]
    workdir: Path
    procs: list[ServerProc] = field(default_factory=list)

    def create(self, extra: Sequence[str] = ()) -> None:
        ports = CLUSTER_PORTS.allocate(2 * len(NAMES))
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(NAMES))
        for i, name in enumerate(NAMES):
            client_port, peer_port = ports[2 * i], ports[2 * i + 1]
            run_dir = self.workdir / name
            flags = etcd_flags(
                name,
                run_dir / "data",
                client_port,
                peer_port,
                initial_cluster=initial,
                cors=None,
                extra=["--initial-cluster-state", "new", "--initial-cluster-token", TOKEN, *extra],
            )
            self.procs.append(
                ServerProc(
                    cmd=list(self.cmd),
                    flags=flags,
                    name=name,
                    client_port=client_port,
                    peer_port=peer_port,
                    data_dir=run_dir / "data",
                    log_dir=run_dir,
                )
            )

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
