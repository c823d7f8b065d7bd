"""Shared pieces of the crash tests: servers on our own ports, v2 reads, WAL record framing.

Every process is started through tests/support/procs.py (own process group, logs in the test's
tmp dir) and registered with a ``Servers`` tracker, whose ``stop_all()`` (a fixture finalizer)
stops each one by its pid. Ports come from 24000-24999, this suite's range.

The WAL framing below is re-implemented from the format documented in raft/wal.py (not imported
from it), so a change of the on-disk format shows up here as a failure to parse, not as a test
that silently follows the implementation.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import (
    ServerProc,
    ServerStartError,
    etcd_flags,
    http_get,
    impl_command,
    port_allocator,
    start_server,
)

CRASH_PORTS = port_allocator(24000, 25000)

# raft/wal.py: u32 payload length | u32 crc32(type byte + payload) | u8 type | payload (LE)
REC_HEAD = struct.Struct("<II")
REC_SEGMENT, REC_ENTRY, REC_HARD_STATE, REC_SNAPSHOT = 1, 2, 3, 4
REC_NAMES = {
    REC_SEGMENT: "segment",
    REC_ENTRY: "entry",
    REC_HARD_STATE: "hard_state",
    REC_SNAPSHOT: "snapshot",
}

HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


# ---------------------------------------------------------------- servers


@dataclass
class Servers:
    """The servers one test started. ``stop_all`` stops each by its own pid (process group)."""

    workdir: Path
    procs: list[ServerProc] = field(default_factory=list)

    def fresh(self, name: str = "n1", extra: tuple[str, ...] = ()) -> ServerProc:
        """A new single-member server on an empty data dir, ready to serve."""
        proc = start_server(impl_command(), self.workdir, name=name, extra=extra, ports=CRASH_PORTS)
        self.procs.append(proc)
        return proc

    def on_data_dir(
        self,
        like: ServerProc,
        data_dir: Path,
        tag: str,
        extra: tuple[str, ...] = (),
        new_ports: bool = False,
    ) -> ServerProc:
        """A server (not started) with ``like``'s name and ports (or new ones) on ``data_dir``.

        Same name and peer URL matter: etcd derives the member id from them for a new member,
        so a copy is started exactly the way the original was. Run such copies one at a time.
        """
        log_dir = self.workdir / f"{like.name}-{tag}"
        client_port, peer_port = CRASH_PORTS.allocate(2) if new_ports else (like.client_port, like.peer_port)
        proc = ServerProc(
            cmd=list(like.cmd),
            flags=etcd_flags(like.name, data_dir, client_port, peer_port, extra=extra),
            name=like.name,
            client_port=client_port,
            peer_port=peer_port,
            data_dir=data_dir,
            log_dir=log_dir,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


def wait_healthy(proc: ServerProc, timeout: float = 15.0) -> None:
    """Poll /health until it reports true (a leader, and a no-op went through the log).

    Everything in the log before that no-op has been applied when it returns: a local read
    afterwards sees all of it. Raises ServerStartError (with the log tail) if the process exits.
    """
    assert proc.popen is not None
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.popen.poll()
        if rc is not None:
            raise ServerStartError(
                f"{proc.name} exited with status {rc} before becoming healthy\n{proc.stderr_tail()}"
            )
        st, _, body = http_get(proc.client_port, "/health", timeout=1.0)
        if st == 200 and b'"true"' in body:
            return
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{proc.name} not healthy within {timeout:.0f}s (last {st})\n{proc.stderr_tail()}"
            )
        time.sleep(0.03)


def restart_ready(proc: ServerProc, timeout: float = 15.0) -> None:
    """Start ``proc`` again (it must be stopped) on its data dir and wait until it is healthy."""
    assert not proc.alive(), f"{proc.name} still running"
    proc.spawn()
    wait_healthy(proc, timeout)


def log_text(proc: ServerProc) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in (proc.stderr_path, proc.stdout_path) if p.exists()
    )


# ---------------------------------------------------------------- v2 reads


def v2_get(client: httpx.Client, key: str, **params: str) -> httpx.Response:
    return client.get(f"/v2/keys{key}", params=params)


def leaves(node: dict[str, Any], out: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """key -> (value, modifiedIndex) for every non-directory node under ``node``."""
    if node.get("dir"):
        for child in node.get("nodes") or []:
            leaves(child, out)
    else:
        out[node["key"]] = (node.get("value", ""), node["modifiedIndex"])
    return out


def read_tree(base_url: str, prefix: str) -> tuple[dict[str, tuple[str, int]], int]:
    """The leaves under ``prefix`` (empty if it does not exist) and the X-Etcd-Index."""
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT) as c:
        r = v2_get(c, prefix, recursive="true", sorted="true")
    index = int(r.headers["x-etcd-index"])
    if r.status_code == 404 and r.json().get("errorCode") == 100:
        return {}, index
    assert r.status_code == 200, f"GET {prefix}: {r.status_code} {r.text}"
    return leaves(r.json()["node"], {}), index


# ---------------------------------------------------------------- data dirs and the WAL


@dataclass(frozen=True, slots=True)
class WalRecord:
    offset: int
    size: int  # header + type byte + payload
    rtype: int
    payload: bytes

    @property
    def kind(self) -> str:
        return REC_NAMES.get(self.rtype, f"type{self.rtype}")


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "member" / "wal").glob("*.wal"))


def wal_records(path: Path) -> list[WalRecord]:
    """Every record of a complete segment; asserts the framing and each record's CRC. A segment
    is preallocated (etcd's layout): zeros after its last record are unused space."""
    data = path.read_bytes()
    out: list[WalRecord] = []
    off = 0
    while off < len(data) and data[off:].strip(b"\0"):
        assert len(data) - off >= REC_HEAD.size + 1, f"{path}: short record header at {off}"
        length, crc = REC_HEAD.unpack_from(data, off)
        end = off + REC_HEAD.size + 1 + length
        assert end <= len(data), f"{path}: record at {off} runs past the end"
        body = data[off + REC_HEAD.size : end]
        assert zlib.crc32(body) == crc, f"{path}: crc mismatch at {off}"
        out.append(WalRecord(off, end - off, body[0], body[1:]))
        off = end
    return out


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (directories as "dir")."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_data_dir(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst
