"""The WAL's fdatasyncs, run by a small helper process instead of a thread of this one.

Why a process: a thread that returns from fdatasync must take the GIL back from the event loop,
which holds it almost all the time under load. The two then hand the GIL back and forth on
every release (measured: ~12 futex calls and ~8 context switches per fsync, all that thread's,
and the fsync's completion waiting on them). A process has its own GIL: the loop sends one
byte over a socket pair, the helper fdatasyncs the segment (its copy of the descriptor, sent
with SCM_RIGHTS when the segment changes) and answers one byte, which the loop reads as an
ordinary readable socket. Durable writes at 16 connections: ~10k -> ~13k per second here.

Failure rules (a failed fsync is never retried: see raft/wal.py WAL.sync):
- the helper answers an errno: that fsync failed, the WAL becomes unusable;
- the helper goes away while an fsync is in flight: that fsync failed (nothing says it
  happened), the same way; if it goes away idle, the next fsync starts a new one.

Must not import store, starlette, httpx, v2api, v3gateway or app.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Final

log = logging.getLogger("etcdpy.raft")

# The helper: answers each request byte with 0 after fdatasync(the newest descriptor it was
# sent), or with the errno (1-255) if it failed; exits when the socket closes.  -I -S: no site,
# no environment, no user paths: a ~10 ms start that imports only os, socket and sys.
_HELPER: Final = """
import os, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
fd = -1
while True:
    try:
        msg, fds, _, _ = socket.recv_fds(s, 64, 4)
    except OSError:
        break
    if not msg:
        break
    for extra in fds[:-1]:
        os.close(extra)
    if fds:
        if fd >= 0:
            os.close(fd)
        fd = fds[-1]
    try:
        os.fdatasync(fd)  # covers every request read: each was sent after its writes
        answer = bytes(len(msg))
    except OSError as e:
        answer = bytes([min(e.errno or 5, 255)]) * len(msg)
    try:
        s.sendall(answer)
    except OSError:
        break  # the server closed its end (it is stopping): leave without a traceback
"""

HELPER_STOP_WAIT_S: Final = 2.0


class HelperGone(OSError):
    """The helper process ended while an fsync was in flight."""


class SyncHelper:
    """fdatasync(fd) in a helper process, awaited on the event loop: sync() gives a Future of
    the seconds it took (wall time, handoff included) or of the OSError it failed with.

    The caller passes a generation that changes whenever `fd` means a different file (a new WAL
    segment may reuse a closed segment's number); syncs are answered in the order asked.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sent_gen = -1
        self._waiting: collections.deque[tuple[asyncio.Future[float], float]] = collections.deque()

    def sync(self, fd: int, generation: int) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        sock = self._sock if self._sock is not None else self._start(loop)
        if generation != self._sent_gen:
            socket.send_fds(sock, [b"s"], [fd])
            self._sent_gen = generation
        else:
            sock.send(b"s")
        self._waiting.append((fut, time.perf_counter()))
        return fut

    def _start(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C is for etcdpy, which stops it
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        loop.add_reader(ours.fileno(), self._readable)
        self._sock, self._loop, self._sent_gen = ours, loop, -1
        return ours

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            answers = self._sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            answers = b""
        if not answers:
            self._lost()
            return
        now = time.perf_counter()
        for code in answers:
            if not self._waiting:
                log.error("the WAL sync helper answered more than it was asked")
                break
            fut, asked = self._waiting.popleft()
            if fut.done():
                continue
            if code:
                fut.set_exception(OSError(code, f"fdatasync: {os.strerror(code)}"))
            else:
                fut.set_result(now - asked)

    def _lost(self) -> None:
        """The helper exited (killed, or out of memory): fail what it had not answered."""
        pending, self._waiting = self._waiting, collections.deque()
        if pending:
            log.error("the WAL sync helper exited with %d fsync(s) in flight", len(pending))
        else:
            log.warning("the WAL sync helper exited; the next fsync starts a new one")
        self._stop_helper()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(HelperGone("the WAL sync helper exited during an fsync"))

    def close(self) -> None:
        """Stop the helper; fsyncs still in flight fail (their waiter is being cancelled)."""
        pending, self._waiting = self._waiting, collections.deque()
        self._stop_helper()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(HelperGone("the WAL sync helper was stopped"))

    def _stop_helper(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()  # the helper reads EOF and exits
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(HELPER_STOP_WAIT_S)
            except subprocess.TimeoutExpired:  # stuck in an fsync of a dying disk
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(HELPER_STOP_WAIT_S)

    @property
    def helper_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None
