"""A snapshot written by a forked child process, while the parent goes on serving.

Why: on the event loop, a snapshot of a big store stalled every request: copying the state
(~43 ms per 100,000 v2 keys) and then one orjson call on a worker thread, which holds the GIL
for its whole run (probe GETs waited 90-490 ms at 100,000-300,000 keys; writes stopped for
the whole save, as the raft loop awaited it). A forked child sees the state exactly as it was
at the fork (copy-on-write), encodes and saves it on the other core, and exits; the parent
only pays the fork. It does not read the file back: the data stays on disk until a follower
needs it (raft/node.py RaftNode.snapshot_data), which a one-member cluster never does. Reading
it back cost the parent ~120-440 ms of CPU per 150 MB snapshot (500,000 v2 keys) and kept it in
memory.

The child runs no event loop and takes no lock: it encodes with the given function, writes
the file with the Snapshotter (plain files) and leaves with os._exit, never returning into
the parent's code. Its copies of the parent's descriptors are closed first, so a connection
the parent closes is closed for its client at once.

Must not import store, starlette, httpx, v2api, v3gateway or app.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Final

from raft.core.types import SnapshotMeta
from raft.snapshotter import Snapshotter

_PR_SET_PDEATHSIG: Final = 1
# Looked up here: the child calls it at once, and loading a library there could wait on a lock
# another thread of the parent held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
POLL_S: Final = 0.02  # how often the parent looks whether the child has exited
CHILD_TIMEOUT_S: Final = 3600.0  # a child still writing after this is stuck: killed, a failure


# What the state machine gives for a snapshot: its bytes now, or a function, called later (in
# the child, or on a thread), that encodes the state as it was copied: whole, or in pieces
# written as they come (Snapshotter.save_chunks).
SnapshotSource = Callable[[], bytes | Callable[[], bytes | Iterable[bytes | memoryview]]]


def joined(data: bytes | Iterable[bytes | memoryview]) -> bytes:
    return data if isinstance(data, bytes) else b"".join(data)


class SnapshotChildFailed(Exception):
    """The child exited without saving the snapshot (its stderr says why)."""


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform == "linux"


class ForkedSnapshot:
    """One snapshot being saved by a child: result() waits until it is on disk."""

    def __init__(self, pid: int, meta: SnapshotMeta) -> None:
        self.pid = pid
        self.meta = meta
        self._reaped = False

    @classmethod
    def start(cls, snapshotter: Snapshotter, meta: SnapshotMeta, take: SnapshotSource) -> ForkedSnapshot:
        """Fork now (the state as it is now is what gets saved); raises OSError if fork fails."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child leaves through os._exit, never returning here
            _child(parent, snapshotter, meta, take)
        return cls(pid, meta)

    async def result(self) -> SnapshotMeta:
        """The saved snapshot's meta, once the child has saved it (the file is durable under its
        final name); SnapshotChildFailed if it did not."""
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped = True
                break
            if time.monotonic() > deadline:
                self.kill()
                raise SnapshotChildFailed(f"snapshot child {self.pid} ran past {CHILD_TIMEOUT_S:.0f} s")
            await asyncio.sleep(POLL_S)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SnapshotChildFailed(f"snapshot child {self.pid} exited with {code}")
        return self.meta

    def kill(self) -> None:
        """Stop the child (its half-written file is a *.tmp, removed at the next start)."""
        if self._reaped:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self._reaped = True


def _child(parent: int, snapshotter: Snapshotter, meta: SnapshotMeta, take: SnapshotSource) -> None:
    code = 1
    try:
        # Dies with the parent: a restarted server must not find an orphan still writing into
        # its snapshot directory (a crash between the fork and this call is checked after it).
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return
        # A signal meant for this child must not reach the parent's loop through the wakeup
        # descriptor they share, nor run the parent's handlers here.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        gc.disable()  # a collection would touch (and so copy) every tracked object's page
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        taken = take()
        data = taken if isinstance(taken, bytes) else taken()
        snapshotter.save_chunks(meta, (data,) if isinstance(data, bytes) else data)
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            # os.write, not sys.stderr: a thread of the parent may have held its lock at the fork
            os.write(2, f"snapshot child {os.getpid()} failed:\n{traceback.format_exc()}".encode())
    finally:
        os._exit(code)
