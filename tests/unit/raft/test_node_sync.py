"""RaftNode._persist: where the fsync runs. A lone write (latency-bound) is synced on the event
loop; a batch of overlapping writes by the helper process (raft/syncer.py), so the loop keeps
taking requests. Either way nothing is applied before its fsync returned."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from raft.core.types import Entry
from raft.node import NodeOptions, RaftNode


def test_lone_writes_sync_on_the_loop_and_batches_in_the_helper(tmp_path: Path) -> None:
    asyncio.run(_run(tmp_path, slow_disk=False))


def test_a_slow_disk_keeps_even_lone_fsyncs_off_the_loop(tmp_path: Path) -> None:
    """Every fsync takes 3 ms (> INLINE_SYNC_MAX_S): at most the first lone one blocks the loop."""
    asyncio.run(_run(tmp_path, slow_disk=True))


async def _until_leading(node: RaftNode) -> None:
    for _ in range(300):
        if node.leader_caught_up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the one-member node did not lead within 3 s")


async def _run(tmp_path: Path, *, slow_disk: bool) -> None:
    applied: list[Entry] = []
    node = RaftNode(
        # fsync=False: the disk's own speed must not decide where the (traced) sync runs.
        NodeOptions(node_id=1, peers=(1,), wal_dir=tmp_path / "wal", snap_dir=tmp_path / "snap", fsync=False),
        apply=applied.append,
        take_snapshot=lambda: b"",
        restore=lambda data: None,
    )
    node.open()
    wal = node._wal
    assert wal is not None
    loop_thread = threading.get_ident()
    syncs: list[tuple[int, bool]] = []  # (entries appended since the last sync, on the loop?)
    durable: set[bytes] = set()
    pending: list[bytes] = []
    append, sync, sync_target, synced = wal.append, wal.sync, wal.sync_target, wal.synced
    helper = node._sync_helper
    helper_sync = helper.sync

    def traced_append(entries: list[Entry], hard_state: object) -> None:
        pending.extend(e.data for e in entries)
        append(entries, hard_state)  # type: ignore[arg-type]

    def traced_sync() -> None:
        sync()
        if slow_disk:
            time.sleep(0.003)
        syncs.append((len(pending), threading.get_ident() == loop_thread))
        durable.update(pending)
        pending.clear()

    def real_target() -> tuple[int, int] | None:
        # fsync=False keeps the disk's speed out of the choice, but the helper must really run
        return (wal._fd, wal._fd_gen) if sync_target() is None and pending else sync_target()

    def slow_helper_sync(fd: int, generation: int) -> asyncio.Future[float]:
        done = helper_sync(fd, generation)
        if not slow_disk:
            return done
        later: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        done.add_done_callback(
            lambda f: asyncio.get_running_loop().call_later(0.003, later.set_result, f.result() + 0.003)
        )
        return later

    def traced_synced(error: OSError | None) -> None:
        synced(error)
        syncs.append((len(pending), False))
        durable.update(pending)
        pending.clear()

    def checked_apply(e: Entry) -> None:
        assert e.data in durable or not e.data, "applied before its fsync"
        applied.append(e)

    wal.append, wal.sync = traced_append, traced_sync  # type: ignore[method-assign]
    wal.sync_target, wal.synced = real_target, traced_synced  # type: ignore[method-assign]
    helper.sync = slow_helper_sync  # type: ignore[method-assign]
    node._apply = checked_apply
    async def until_applied(data: bytes) -> None:
        for _ in range(200):
            if applied and applied[-1].data == data:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{data!r} not applied")

    node.start()
    try:
        await _until_leading(node)
        syncs.clear()
        for i in range(20):  # one client, one write at a time
            node.propose(b"lone-%d" % i)
            await until_applied(b"lone-%d" % i)
        if slow_disk:
            assert syncs and all(n == 1 for n, _ in syncs), syncs
            assert sum(on_loop for _, on_loop in syncs) <= 1, syncs
        else:
            assert syncs and all(n == 1 and on_loop for n, on_loop in syncs), syncs
        syncs.clear()
        for i in range(200):  # many clients at once: one batch
            node.propose(b"burst-%d" % i)
        await until_applied(b"burst-199")
        assert max(n for n, _ in syncs) >= 100
        assert all(not on_loop for n, on_loop in syncs if n > 1), syncs
        assert helper.helper_pid is not None  # the batches' fsyncs ran there
        assert {e.data for e in applied} >= {b"lone-%d" % i for i in range(20)} | {
            b"burst-%d" % i for i in range(200)
        }
    finally:
        await node.stop()


def test_a_failed_fsync_in_the_helper_stops_the_node_before_applying(tmp_path: Path) -> None:
    async def run() -> None:
        applied: list[bytes] = []
        node = RaftNode(
            NodeOptions(node_id=1, peers=(1,), wal_dir=tmp_path / "wal", snap_dir=tmp_path / "snap"),
            apply=lambda e: applied.append(e.data),
            take_snapshot=lambda: b"",
            restore=lambda data: None,
        )
        node.open()
        node.start()
        try:
            await _until_leading(node)
            helper = node._sync_helper

            def failing(fd: int, generation: int) -> asyncio.Future[float]:
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                fut.set_exception(OSError(5, "fdatasync: I/O error"))
                return fut

            helper.sync = failing  # type: ignore[method-assign]
            node._entries_per_sync = 100.0  # a batch: the helper's path
            for i in range(50):
                node.propose(b"w-%d" % i)
            for _ in range(200):
                if node.failure is not None:
                    break
                await asyncio.sleep(0.01)
            assert isinstance(node.failure, OSError)
            assert not any(d.startswith(b"w-") for d in applied)
            assert node._wal is not None
            with pytest.raises(RuntimeError, match="failed earlier"):
                node._wal.sync_target()
        finally:
            await node.stop()

    asyncio.run(run())
