"""raft/forksnap.py: a snapshot saved by a forked child, as the state was at the fork."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from raft.core.types import ConfState, SnapshotMeta
from raft.forksnap import ForkedSnapshot, SnapshotChildFailed
from raft.snapshotter import Snapshotter

pytestmark = pytest.mark.timeout(30)

META = SnapshotMeta(index=7, term=2, conf_state=ConfState(voters=(1,)))


def test_the_child_saves_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    async def run() -> None:
        snapshotter = Snapshotter(tmp_path)
        state = {"k": "before"}

        def take() -> bytes:
            time.sleep(0.2)  # the parent changes the state meanwhile
            return state["k"].encode()

        job = ForkedSnapshot.start(snapshotter, META, take)
        state["k"] = "after"
        assert await job.result() == META
        snap = snapshotter.load_newest()  # durable, under its final name
        assert snap is not None and (snap.meta, snap.data) == (META, b"before")

    asyncio.run(run())


def test_an_encoder_function_runs_in_the_child_too(tmp_path: Path) -> None:
    async def run() -> None:
        parent = os.getpid()
        snapshotter = Snapshotter(tmp_path)
        job = ForkedSnapshot.start(snapshotter, META, lambda: lambda: b"pid %d" % os.getpid())
        assert await job.result() == META
        snap = snapshotter.load_newest()
        assert snap is not None and snap.data.startswith(b"pid ") and snap.data != b"pid %d" % parent

    asyncio.run(run())


def test_an_encoder_may_give_pieces_which_the_child_writes_as_one_snapshot(tmp_path: Path) -> None:
    async def run() -> None:
        snapshotter = Snapshotter(tmp_path)
        pieces = [b"{", b"x" * (2 << 20), b"", b"pid %d}" % os.getpid()]
        job = ForkedSnapshot.start(snapshotter, META, lambda: lambda: iter(pieces))
        assert await job.result() == META
        snap = snapshotter.load_newest()
        assert snap is not None and snap.data == b"".join(pieces)

    asyncio.run(run())


def test_a_failing_child_is_a_failure_and_leaves_no_snapshot(tmp_path: Path) -> None:
    async def run() -> None:
        def take() -> bytes:
            raise RuntimeError("encoding failed")

        snapshotter = Snapshotter(tmp_path)
        with pytest.raises(SnapshotChildFailed, match="exited with 1"):
            await ForkedSnapshot.start(snapshotter, META, take).result()
        assert snapshotter.load_newest() is None

    asyncio.run(run())


def test_a_killed_child_leaves_no_snapshot_and_is_reaped(tmp_path: Path) -> None:
    async def run() -> None:
        snapshotter = Snapshotter(tmp_path)
        job = ForkedSnapshot.start(snapshotter, META, lambda: time.sleep(60) or b"x")  # type: ignore[func-returns-value]
        await asyncio.sleep(0.1)
        job.kill()
        with pytest.raises(ChildProcessError):
            os.waitpid(job.pid, os.WNOHANG)  # already reaped: no zombie left
        assert snapshotter.load_newest() is None

    asyncio.run(run())


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A server killed mid-snapshot leaves no orphan writing into the directory it restarts on."""
    script = (
        "import asyncio, os, sys, time\n"
        "from pathlib import Path\n"
        "from raft.core.types import ConfState, SnapshotMeta\n"
        "from raft.forksnap import ForkedSnapshot\n"
        "from raft.snapshotter import Snapshotter\n"
        "meta = SnapshotMeta(index=7, term=2, conf_state=ConfState(voters=(1,)))\n"
        "job = ForkedSnapshot.start(Snapshotter(Path(sys.argv[1])), meta, lambda: time.sleep(60) or b'x')\n"
        "print(job.pid, flush=True)\n"
        "time.sleep(0.3)\n"
        "os._exit(0)\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=20, check=True, cwd=os.getcwd()
    )
    child = int(out.stdout.split()[0])
    for _ in range(100):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):  # dead; whoever adopted it has not reaped it yet
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        raise AssertionError("the snapshot child outlived its parent")
    assert Snapshotter(tmp_path).load_newest() is None
