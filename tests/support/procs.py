"""Start and stop real server processes (etcd or etcdpy) for differential and crash tests.

Everything here is bounded and local:

* ports come from 22000-22999 (below the ephemeral range), split into per-xdist-worker blocks,
  and each port is checked to be bindable on 127.0.0.1 before it is handed out;
* every process is started in its own process group (``start_new_session``) with
  stdout/stderr going to files in the test's tmp dir, and is stopped by *its* pid/pgid:
  SIGTERM, then SIGKILL after a bound.  Nothing else is ever signalled;
* readiness is polled on loopback with per-request timeouts and an overall deadline, and a
  failure reports the tail of the process's stderr.

The same flags start either binary: the implementation under test is a drop-in for etcd.
"""

from __future__ import annotations

import http.client
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PORT_RANGE = (22000, 23000)  # [lo, hi); below 32768, outside the ephemeral range
PORT_BLOCK = 100  # per pytest-xdist worker

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0
HTTP_TIMEOUT = 2.0


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------- ports


def _worker_index() -> int | None:
    w = os.environ.get("PYTEST_XDIST_WORKER", "")
    if w.startswith("gw") and w[2:].isdigit():
        return int(w[2:])
    return None


class PortAllocator:
    """Hands out distinct, currently bindable loopback ports from one block of the range."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        # A random starting point makes two concurrent pytest processes unlikely to collide.
        self._next = random.Random(os.getpid() ^ time.monotonic_ns()).randrange(lo, hi)
        self._lock = threading.Lock()

    def _candidates(self) -> Iterator[int]:
        span = self.hi - self.lo
        for _ in range(span):
            p = self._next
            self._next = self.lo + (p + 1 - self.lo) % span
            yield p

    def allocate(self, n: int = 1) -> list[int]:
        with self._lock:
            out: list[int] = []
            for p in self._candidates():
                if port_is_free(p):
                    out.append(p)
                    if len(out) == n:
                        return out
        raise RuntimeError(f"no {n} free ports in {self.lo}-{self.hi - 1} on 127.0.0.1")


def port_is_free(port: int) -> bool:
    # No SO_REUSEADDR: a port with lingering TIME_WAIT connections is skipped as well.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_allocator(lo: int, hi: int, block: int = PORT_BLOCK) -> PortAllocator:
    """An allocator over ``[lo, hi)``, narrowed to this pytest-xdist worker's block of ``block``
    ports when running under xdist (so suites with their own port range stay disjoint too)."""
    idx = _worker_index()
    if idx is not None:
        nblocks = max(1, (hi - lo) // block)
        lo = lo + (idx % nblocks) * block
        hi = min(hi, lo + block)
    return PortAllocator(lo, hi)


def _make_allocator() -> PortAllocator:
    return port_allocator(*PORT_RANGE)


PORTS = _make_allocator()


def free_ports(n: int) -> list[int]:
    return PORTS.allocate(n)


# ---------------------------------------------------------------- commands


def impl_command() -> list[str]:
    """The implementation under test: ``ETCDPY_CMD`` (shell-split) or ``python -m app``."""
    override = os.environ.get("ETCDPY_CMD", "").strip()
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "app"]


def impl_description() -> str:
    return " ".join(impl_command())


def etcd_flags(
    name: str,
    data_dir: Path,
    client_port: int,
    peer_port: int,
    *,
    initial_cluster: str | None = None,
    cors: str | None = "*",
    extra: Sequence[str] = (),
) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    flags = [
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        initial_cluster or f"{name}={peer}",
        "--enable-v2=true",
    ]
    if cors is not None:
        flags += ["--cors", cors]
    return flags + list(extra)


# ---------------------------------------------------------------- processes


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerProc:
    """One server process we started (etcd or the implementation under test)."""

    cmd: list[str]  # program + its own leading args (e.g. [python, -m, app])
    flags: list[str]  # etcd-style flags
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_dir: Path
    cwd: Path = REPO_ROOT
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _logs: list[Path] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr.log"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        marker = f"\n===== start #{self.starts}: {shlex.join(self.cmd + self.flags)}\n".encode()
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            self.popen = subprocess.Popen(
                self.cmd + self.flags,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # own process group: pgid == pid
            )

    def stderr_tail(self, n: int = 40) -> str:
        chunks = []
        for p in (self.stderr_path, self.stdout_path):
            try:
                lines = p.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if lines:
                chunks.append(f"--- {p.name} (last {min(n, len(lines))} lines)\n" + "\n".join(lines[-n:]))
        return "\n".join(chunks) or "(no output)"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll GET /version until 200, then /health and a stable v2 store index (bounded)."""
        deadline = time.monotonic() + timeout

        def fail(why: str) -> ServerStartError:
            return ServerStartError(f"{self.name} ({shlex.join(self.cmd)}) {why}\n{self.stderr_tail()}")

        def check_alive() -> None:
            assert self.popen is not None
            rc = self.popen.poll()
            if rc is not None:
                raise fail(f"exited with status {rc} before becoming ready")

        while True:
            check_alive()
            st, _, _ = http_get(self.client_port, "/version")
            if st == 200:
                break
            if time.monotonic() >= deadline:
                raise fail(f"did not answer GET /version with 200 within {timeout:.0f}s")
            time.sleep(0.05)
        # A leader exists (/health true) -- tolerate an implementation without /health.
        while True:
            check_alive()
            st, _, body = http_get(self.client_port, "/health")
            if st == 404 or (st == 200 and b'"true"' in body):
                break
            if time.monotonic() >= deadline:
                raise fail(f"GET /health never reported healthy (last status {st})")
            time.sleep(0.05)
        # Internal bootstrap writes (member, attributes, cluster version) have landed when the
        # v2 store index stops moving.  Absolute indices in the diff tests depend on it.
        last: str | None = None
        while time.monotonic() < deadline:
            check_alive()
            st, headers, _ = http_get(self.client_port, "/v2/keys/")
            if st != 200:
                break
            idx = headers.get("x-etcd-index")
            if idx is None or idx == last:
                break
            last = idx
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM our process group, SIGKILL after ``timeout``. Returns the exit status."""
        return _terminate(self.popen, signal.SIGTERM, timeout)

    def kill9(self) -> int | None:
        return _terminate(self.popen, signal.SIGKILL, KILL_TIMEOUT)

    def remove_data(self) -> None:
        """Delete the data dir of a stopped server (etcd preallocates 64 MB WAL files); logs stay."""
        if self.alive():
            raise RuntimeError(f"{self.name} is still running (pid {self.pid})")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # We started it with start_new_session=True, so its pgid is its pid; signal only that group.
    try:
        os.killpg(popen.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            popen.send_signal(sig)
        except ProcessLookupError:
            pass


def _terminate(popen: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> int | None:
    if popen is None:
        return None
    # Only signal while our child is unreaped: its pid (== pgid) cannot have been reused then.
    if popen.poll() is None:
        _signal_group(popen, sig)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
            popen.wait(timeout=KILL_TIMEOUT)
    return popen.returncode


def kill9(proc: ServerProc) -> int | None:
    """SIGKILL the server (crash simulation); data dir and ports are kept for ``restart``."""
    return proc.kill9()


def stop(proc: ServerProc, timeout: float = STOP_TIMEOUT) -> int | None:
    return proc.stop(timeout)


def restart(proc: ServerProc, *, ready: bool = True, timeout: float = READY_TIMEOUT) -> ServerProc:
    """Stop (if running) and start again with the same flags, ports and data dir."""
    if proc.alive():
        proc.stop()
    proc.spawn()
    if ready:
        try:
            proc.wait_ready(timeout)
        except ServerStartError:
            proc.stop()
            raise
    return proc


def start_server(
    cmd: Sequence[str],
    workdir: Path,
    *,
    name: str = "spec",
    cors: str | None = "*",
    extra: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT,
    attempts: int = 3,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    ports: PortAllocator | None = None,
) -> ServerProc:
    """Start a fresh single-member server (empty data dir under ``workdir``) and wait until ready.

    If it dies during startup because a port was taken in the meantime, retry with new ports.
    The caller must ``stop()`` it (use the fixtures, which do this in a finalizer).
    ``ports`` overrides the default allocator (a suite with its own port range).
    """
    last_err: ServerStartError | None = None
    for attempt in range(1, attempts + 1):
        client_port, peer_port = (ports or PORTS).allocate(2)
        run_dir = workdir / f"{name}-{client_port}"
        data_dir = run_dir / "data"
        run_dir.mkdir(parents=True, exist_ok=True)
        flags = etcd_flags(name, data_dir, client_port, peer_port, cors=cors, extra=extra)
        proc = ServerProc(
            cmd=list(cmd),
            flags=flags,
            name=name,
            client_port=client_port,
            peer_port=peer_port,
            data_dir=data_dir,
            log_dir=run_dir,
            cwd=cwd,
            env=env,
        )
        proc.spawn()
        try:
            proc.wait_ready(ready_timeout)
            return proc
        except ServerStartError as e:
            proc.stop()
            last_err = e
            text = str(e).lower()
            if "address already in use" not in text or attempt == attempts:
                raise
    assert last_err is not None
    raise last_err


# ---------------------------------------------------------------- tiny HTTP helper


def http_get(port: int, path: str, timeout: float = HTTP_TIMEOUT) -> tuple[int | None, dict[str, str], bytes]:
    """GET on 127.0.0.1:port; (None, {}, b"") on any connection error or timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    except (OSError, http.client.HTTPException):
        return None, {}, b""
    finally:
        conn.close()
