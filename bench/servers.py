"""The two servers under comparison: start, readiness, /proc statistics, stop by PID."""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PORT_LO, PORT_HI = 26000, 26999
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

# Every server process this benchmark started; `stop_all` ends them by PID.
STARTED: list[Server] = []
_used_ports: set[int] = set()


def free_port() -> int:
    """A loopback port in 26000-26999 that nothing listens on (and that we have not handed out)."""
    for port in range(PORT_LO, PORT_HI + 1):
        if port in _used_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_LO}-{PORT_HI}")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the benchmark itself dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


@dataclass
class Server:
    label: str  # "etcd" or "etcdpy"
    cmd: list[str]  # program (+ leading args) before etcd's flags
    cwd: Path
    data_dir: Path
    log_dir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.label} not started"
        return self.proc.pid

    def flags(self) -> list[str]:
        client = f"http://{HOST}:{self.client_port}"
        peer = f"http://{HOST}:{self.peer_port}"
        return [
            "--name",
            "bench",
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"bench={peer}",
            "--enable-v2=true",
        ]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.label} already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{self.label}-{self.client_port}.log", "ab")
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("ETCD_"):
                del env[name]  # the flags alone configure both servers
        try:
            self.proc = subprocess.Popen(
                self.cmd + self.flags(),
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # single-threaded parent: safe
            )
        finally:
            log.close()
        if self not in STARTED:
            STARTED.append(self)

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.client_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def wait_ready(
        self, path: str = "/v2/keys/", timeout: float = 60.0, ok: tuple[int, ...] = (200,)
    ) -> float:
        """Poll GET `path` every 5 ms until its status is in `ok`; seconds waited."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        last = ""
        while time.perf_counter() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.label} exited with {self.proc and self.proc.returncode}; see {self.log_dir}"
                )
            try:
                status, _ = self.get(path, timeout=1.0)
                if status in ok:
                    return time.perf_counter() - t0
                last = f"status {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            time.sleep(0.005)
        raise TimeoutError(f"{self.label} not ready after {timeout:.0f}s on GET {path}: {last}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, then SIGKILL after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self.proc = None

    def tree(self) -> list[int]:
        """The server's PID and those of all its live descendants (etcdpy's fsync helper and
        snapshot children): what the server costs is what all of them cost."""
        return [self.pid, *descendants(self.pid)]

    def cpu_seconds(self) -> float:
        """utime + stime of the server and its live descendants (all threads), plus what its
        reaped children used (cutime + cstime), from /proc/<pid>/stat. A child counted live in
        one sample and reaped by the next moves into cutime with its whole CPU, so a difference
        of two samples counts it once."""
        total = 0.0
        for pid in self.tree():
            fields = _stat_fields(pid)
            if fields is None:  # gone between the listing and the read
                continue
            total += int(fields[11]) + int(fields[12])
            if pid == self.pid:
                total += int(fields[13]) + int(fields[14])
        return total / CLK_TCK

    def rss_bytes(self) -> int:
        """Memory of the server and its live descendants: the sum of their PSS (a page shared by
        n of them counts 1/n in each, so a forked child's copy-on-write pages are not counted
        twice). For a single process, PSS is its RSS less its share of shared libraries."""
        total = 0
        for pid in self.tree():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except (FileNotFoundError, ProcessLookupError):
                continue
        if total == 0:
            raise RuntimeError(f"no memory figures for {self.label} pid {self.pid}")
        return total


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (fields[0] is the state, field 3), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def descendants(pid: int) -> list[int]:
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parent_of[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parents = set(frontier)
        frontier = [child for child, parent in parent_of.items() if parent in parents]
        found.extend(frontier)
    return found


def stop_all() -> None:
    for server in STARTED:
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"bench: stopping {server.label} (pid {server.proc and server.proc.pid}) failed: {exc}")
