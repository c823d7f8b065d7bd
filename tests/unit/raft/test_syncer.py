"""raft/syncer.py: the helper process that runs the WAL's fdatasyncs."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from pathlib import Path

import pytest

from raft.core.types import Entry, EntryType
from raft.syncer import HelperGone, SyncHelper
from raft.wal import WAL

pytestmark = pytest.mark.timeout(30)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_syncs_are_answered_in_order_and_the_helper_follows_a_new_descriptor(tmp_path: Path) -> None:
    async def run() -> None:
        helper = SyncHelper()
        a = os.open(tmp_path / "a", os.O_WRONLY | os.O_CREAT)
        r, w = os.pipe()  # fdatasync on a pipe fails with EINVAL: tells which descriptor ran
        try:
            os.write(a, b"x")
            assert await helper.sync(a, 1) >= 0
            several = [helper.sync(a, 1) for _ in range(5)]
            assert all(t >= 0 for t in await asyncio.gather(*several))
            with pytest.raises(OSError) as bad:
                await helper.sync(w, 2)  # a new generation: the helper takes the pipe
            assert bad.value.errno == errno.EINVAL
            with pytest.raises(OSError):
                await helper.sync(a, 2)  # same generation: it keeps the pipe, whatever the number
            assert await helper.sync(a, 3) >= 0
        finally:
            pid = helper.helper_pid
            helper.close()
            for fd in (a, r, w):
                os.close(fd)
        assert pid is not None and _gone(pid)

    asyncio.run(run())


def test_a_helper_lost_mid_fsync_fails_that_fsync_and_an_idle_loss_is_replaced(tmp_path: Path) -> None:
    async def run() -> None:
        helper = SyncHelper()
        fd = os.open(tmp_path / "a", os.O_WRONLY | os.O_CREAT)
        try:
            await helper.sync(fd, 1)
            pid = helper.helper_pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # it cannot answer the next one
            pending = helper.sync(fd, 1)
            await asyncio.sleep(0.05)
            assert not pending.done()
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(HelperGone):
                await asyncio.wait_for(pending, 10)
            assert helper.helper_pid is None
            # idle now: the next fsync starts a new helper, with the descriptor sent again
            assert await helper.sync(fd, 1) >= 0
            assert helper.helper_pid not in (None, pid)
            os.kill(helper.helper_pid, signal.SIGKILL)  # type: ignore[arg-type]
            for _ in range(100):
                if helper.helper_pid is None:
                    break
                await asyncio.sleep(0.02)
            assert helper.helper_pid is None  # noticed while idle; nothing was failed
            assert await helper.sync(fd, 1) >= 0
        finally:
            helper.close()
            os.close(fd)

    asyncio.run(run())


def test_a_failed_helper_fsync_leaves_the_wal_unusable(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path / "wal", fsync=True)
    try:
        wal.append([Entry(term=1, index=1, type=EntryType.NORMAL, data=b"x")], None)
        target = wal.sync_target()
        assert target is not None and target[0] >= 0
        with pytest.raises(OSError):
            wal.synced(OSError(errno.EIO, "fdatasync: I/O error"))
        with pytest.raises(RuntimeError, match="failed earlier"):
            wal.append([Entry(term=1, index=2, type=EntryType.NORMAL, data=b"y")], None)
        with pytest.raises(RuntimeError, match="failed earlier"):
            wal.sync_target()
    finally:
        wal.close()


def test_only_a_dirty_synced_wal_asks_for_an_fsync(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path / "wal", fsync=True)
    try:
        wal.append([Entry(term=1, index=1, type=EntryType.NORMAL, data=b"x")], None)
        target = wal.sync_target()
        assert target is not None
        wal.synced(None)
        assert wal.sync_target() is None  # nothing written since
        wal.append([Entry(term=1, index=2, type=EntryType.NORMAL, data=b"y")], None)
        assert wal.sync_target() == target  # same segment, same generation
    finally:
        wal.close()
    unsynced, _ = WAL.open(tmp_path / "wal2", fsync=False)
    try:
        unsynced.append([Entry(term=1, index=1, type=EntryType.NORMAL, data=b"x")], None)
        assert unsynced.sync_target() is None
    finally:
        unsynced.close()


def test_the_helper_leaves_quietly_when_the_server_closes_during_an_fsync(tmp_path: Path) -> None:
    """A stopping server closes its socket with an fsync in flight: the helper's answer then has
    nowhere to go, and it exits 0 without a traceback on the server's stderr."""
    import socket
    import subprocess
    import sys

    from raft.syncer import _HELPER

    ours, theirs = socket.socketpair()
    target = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _HELPER, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    try:
        socket.send_fds(ours, [b"s" * 8], [target])
        ours.shutdown(socket.SHUT_RDWR)  # gone before the answers: they hit a closed socket
        ours.close()
        _, err = proc.communicate(timeout=10)
    finally:
        os.close(target)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == b""
