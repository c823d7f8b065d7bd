"""RaftNode snapshots saved by a forked child: the raft loop goes on committing and applying
while the child writes, and the result is what a restart loads."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from raft.core.types import Entry
from raft.node import NodeOptions, RaftNode

pytestmark = pytest.mark.timeout(60)


def _node(tmp_path: Path, applied: list[bytes], restored: list[bytes]) -> RaftNode:
    def take() -> object:
        state = b",".join(applied)  # the state at the fork: what the child encodes

        def encode() -> bytes:
            time.sleep(1.0)  # a big store: the parent must not wait for this
            return state

        return encode

    def apply(e: Entry) -> None:
        if e.data:
            applied.append(e.data)

    def restore(data: bytes) -> None:
        restored.append(data)
        applied[:] = data.split(b",") if data else []

    return RaftNode(
        NodeOptions(
            node_id=1, peers=(1,), wal_dir=tmp_path / "wal", snap_dir=tmp_path / "snap",
            fsync=False, snapshot_count=20, catch_up_entries=5,
        ),
        apply=apply,
        take_snapshot=take,  # type: ignore[arg-type]
        restore=restore,
    )


async def _until(cond: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _leading(node: RaftNode) -> AsyncIterator[RaftNode]:
    """The node opened, started and leading (a one-member cluster); stopped on the way out."""
    node.open()
    node.start()
    try:
        await _until(lambda: node.leader_caught_up)
        yield node
    finally:
        await node.stop()


def test_writes_are_applied_while_the_child_saves_and_a_restart_loads_its_snapshot(tmp_path: Path) -> None:
    async def run() -> None:
        applied: list[bytes] = []
        async with _leading(_node(tmp_path, applied, [])) as node:
            for i in range(25):
                node.propose(b"a%d" % i)
            await _until(lambda: node._snap_task is not None)
            snap_at = node._snap_job.meta.index if node._snap_job else 0
            assert snap_at >= 20
            started = time.monotonic()
            for i in range(30):
                node.propose(b"b%d" % i)
            await _until(lambda: applied[-1:] == [b"b29"])
            assert time.monotonic() - started < 0.9  # not held up by the child's 1 s encoding
            assert node._snap_task is not None and not node._snap_task.done()
            await _until(lambda: node._snap_task is None)
            held = node.storage.snapshot()
            assert held.meta.index == snap_at
            assert node._snap_index == snap_at
            # the parent never read the child's file: the storage has the meta, the data is on
            # disk, read for a follower only when one needs it
            assert held.data == b""
            on_disk = await node.snapshot_data(held.meta)
            assert on_disk.split(b",") == [b"a%d" % i for i in range(25)]
            with pytest.raises(OSError):  # a snapshot that has no file
                await node.snapshot_data(replace(held.meta, index=snap_at + 1))
            expected = list(applied)

        applied2: list[bytes] = []
        restored: list[bytes] = []
        again = _node(tmp_path, applied2, restored)
        again.open()
        try:
            assert len(restored) == 1
            # the state at the fork: the first writes, none of those made while the child ran
            assert restored[0].split(b",") == [b"a%d" % i for i in range(25)]
        finally:
            await again.stop()
        assert again.storage.snapshot().meta.index == snap_at
        # the snapshot plus the log after it give back every write
        tail = [e.data for e in again.storage.entries(snap_at + 1, again.storage.last_index() + 1, 1 << 30) if e.data]
        assert restored[0].split(b",") + tail == expected

    asyncio.run(run())


def test_stopping_the_node_stops_a_child_still_saving(tmp_path: Path) -> None:
    async def run() -> None:
        applied: list[bytes] = []
        node = _node(tmp_path, applied, [])
        node._take_snapshot = lambda: lambda: time.sleep(30) or b""  # type: ignore[assignment,func-returns-value]
        node.open()
        node.start()
        await _until(lambda: node.leader_caught_up)
        for i in range(25):
            node.propose(b"a%d" % i)
        await _until(lambda: node._snap_job is not None)
        assert node._snap_job is not None
        pid = node._snap_job.pid
        started = time.monotonic()
        await node.stop()
        assert time.monotonic() - started < 5
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # killed and reaped: no zombie left behind
        assert node._snap_task is None and node.failure is None

    asyncio.run(run())


def test_the_log_is_compacted_in_steps_to_the_catch_up_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a snapshot the log keeps catch_up_entries behind it, reached in COMPACT_STEP steps
    with the loop free in between (writes keep being applied)."""
    import raft.node

    monkeypatch.setattr(raft.node, "COMPACT_STEP", 3)
    steps: list[int] = []

    async def run() -> None:
        applied: list[bytes] = []
        node = RaftNode(
            NodeOptions(
                node_id=1, peers=(1,), wal_dir=tmp_path / "wal", snap_dir=tmp_path / "snap",
                fsync=False, snapshot_count=40, catch_up_entries=5, fork_snapshots=False,
            ),
            apply=lambda e: applied.append(e.data) if e.data else None,
            take_snapshot=lambda: b"state",
            restore=lambda data: None,
        )
        compact = node.storage.compact
        monkeypatch.setattr(node.storage, "compact", lambda i: (steps.append(i), compact(i)))
        async with _leading(node):
            for i in range(45):
                node.propose(b"w%d" % i)
            await _until(lambda: node._snap_index > 0 and len(applied) == 45)
            snap_at = node._snap_index
            await _until(lambda: node.storage.first_index() == snap_at - 5 + 1)
        assert steps[-1] == snap_at - 5
        assert len(steps) > 5 and all(0 < b - a <= 3 + 1 for a, b in itertools.pairwise(steps))

    asyncio.run(run())
