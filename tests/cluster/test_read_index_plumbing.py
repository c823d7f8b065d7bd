"""RaftNode.read_index: ReadIndex rounds resolved from Ready.read_states (Raft thesis §6.4).

In-process: three RaftNodes in one event loop joined by an in-memory transport (no ports, no
processes). Checks that a follower's request is forwarded to the leader and answered, that no
log entry is appended for a read, that a lost request is asked again, and that a stopped node
fails its waiting reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from raft.core.errors import Stopped
from raft.core.types import Entry, Message, MsgType, StateType
from raft.node import NodeOptions, RaftNode

IDS = (1, 2, 3)


class LoopTransport:
    """Delivers messages to the other in-process nodes on the next loop iteration."""

    def __init__(self, nodes: dict[int, RaftNode]) -> None:
        self.nodes = nodes
        self.drop_read_index = 0  # drop this many READ_INDEX messages (a lost request)

    def send(self, messages: Sequence[Message]) -> None:
        loop = asyncio.get_running_loop()
        for m in messages:
            if m.type is MsgType.READ_INDEX and self.drop_read_index:
                self.drop_read_index -= 1
                continue
            node = self.nodes.get(m.to)
            if node is not None:
                loop.call_soon(node.step, m)


async def _cluster(tmp_path: Path) -> tuple[dict[int, RaftNode], LoopTransport, list[list[Entry]]]:
    nodes: dict[int, RaftNode] = {}
    transport = LoopTransport(nodes)
    applied: list[list[Entry]] = []
    for i in IDS:
        log: list[Entry] = []
        applied.append(log)
        node = RaftNode(
            NodeOptions(
                node_id=i,
                peers=IDS,
                wal_dir=tmp_path / f"n{i}" / "wal",
                snap_dir=tmp_path / f"n{i}" / "snap",
                heartbeat_interval_s=0.01,
                election_ticks=10,
                fsync=False,
            ),
            apply=log.append,
            take_snapshot=lambda: b"",
            restore=lambda data: None,
            transport=transport,
        )
        node.open()
        nodes[i] = node
    for node in nodes.values():
        node.start()
    return nodes, transport, applied


async def _leader(nodes: dict[int, RaftNode]) -> RaftNode:
    for _ in range(500):
        leaders = [n for n in nodes.values() if n.state is StateType.LEADER]
        if len(leaders) == 1 and all(n.lead == leaders[0].opts.node_id for n in nodes.values()):
            if leaders[0].leader_caught_up:
                return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no leader elected")


def test_read_index_on_leader_and_followers_appends_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        nodes, transport, _ = await _cluster(tmp_path)
        try:
            leader = await _leader(nodes)
            before = leader.applied_index
            leader.propose(b"")  # an empty normal entry, committed before the reads
            await leader.wait_applied(before + 1, 2.0)
            target = leader.committed_index
            last = leader.storage.last_index()
            for node in nodes.values():
                index = await node.read_index(2.0)
                assert index >= target
                assert node.applied_index >= index
            # reads append nothing to any log
            assert leader.storage.last_index() == last
            # a follower's lost READ_INDEX is asked again and still answered
            follower = next(n for n in nodes.values() if n is not leader)
            transport.drop_read_index = 1
            assert await follower.read_index(3.0) >= target
            # concurrent reads on one member get distinct ctxs and all resolve
            results = await asyncio.gather(*(follower.read_index(2.0) for _ in range(20)))
            assert min(results) >= target
        finally:
            for node in nodes.values():
                await node.stop()

    asyncio.run(main())


def test_read_index_fails_when_node_stops(tmp_path: Path) -> None:
    async def main() -> None:
        nodes, _, _ = await _cluster(tmp_path)
        leader = await _leader(nodes)
        follower = next(n for n in nodes.values() if n is not leader)
        await leader.stop()  # the follower's request is now never answered
        task = asyncio.get_running_loop().create_task(follower.read_index(5.0))
        await asyncio.sleep(0.05)
        await follower.stop()
        with pytest.raises(Stopped):
            await asyncio.wait_for(task, 2.0)
        for node in nodes.values():
            await node.stop()
        with pytest.raises(Stopped):
            await follower.read_index(1.0)

    asyncio.run(main())


def test_read_index_times_out_without_a_quorum(tmp_path: Path) -> None:
    async def main() -> None:
        nodes, _, _ = await _cluster(tmp_path)
        try:
            leader = await _leader(nodes)
            for node in nodes.values():
                if node is not leader:
                    await node.stop()
            # the leader cannot confirm its leadership with a heartbeat quorum
            with pytest.raises(TimeoutError):
                await leader.read_index(0.5)
        finally:
            for node in nodes.values():
                await node.stop()

    asyncio.run(main())
