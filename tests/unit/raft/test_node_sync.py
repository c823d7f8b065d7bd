"""RaftNode._persist: where the fsync runs. A lone write (latency-bound) is synced on the event
loop; a batch of overlapping writes on a worker thread, so the loop keeps taking requests. Either
way nothing is applied before its fsync returned."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from raft.core.types import Entry
from raft.node import NodeOptions, RaftNode


def test_lone_writes_sync_on_the_loop_and_batches_on_a_thread(tmp_path: Path) -> None:
    asyncio.run(_run(tmp_path, slow_disk=False))


def test_a_slow_disk_keeps_even_lone_fsyncs_off_the_loop(tmp_path: Path) -> None:
    """Every fsync takes 3 ms (> INLINE_SYNC_MAX_S): at most the first lone one blocks the loop."""
    asyncio.run(_run(tmp_path, slow_disk=True))


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
    append, sync = wal.append, wal.sync

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

    def checked_apply(e: Entry) -> None:
        assert e.data in durable or not e.data, "applied before its fsync"
        applied.append(e)

    wal.append, wal.sync = traced_append, traced_sync  # type: ignore[method-assign]
    node._apply = checked_apply
    async def until_applied(data: bytes) -> None:
        for _ in range(200):
            if applied and applied[-1].data == data:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{data!r} not applied")

    node.start()
    try:
        for _ in range(300):
            if node.leader_caught_up:
                break
            await asyncio.sleep(0.01)
        assert node.leader_caught_up
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
        assert {e.data for e in applied} >= {b"lone-%d" % i for i in range(20)} | {
            b"burst-%d" % i for i in range(200)
        }
    finally:
        await node.stop()
