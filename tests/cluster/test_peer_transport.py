"""app.peers in one process: the cluster-ID check, routing, batching, and a dead peer's isolation.

The receiving side runs on etcdpy's peer-port HTTP server on 127.0.0.1 (this suite's ports, 27000-27999); a "dead"
peer is a port nobody listens on.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.peers import ForwardOutcome, PeerApp, PeerTransport
from raft.codec import encode_batch
from raft.core.errors import NotLeader, ProposalDropped
from raft.core.types import Entry, Message, MsgType, Snapshot, SnapshotMeta
from tests.cluster.helpers import CLUSTER_PORTS
from tests.cluster.helpers import serve_peer_port as serve_peer

pytestmark = pytest.mark.timeout(30)

CLUSTER_ID = 0xE458568F1C5FEE81
ME, LIVE, DEAD = 0x11, 0x22, 0x33


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeHandler:
    """Stands in for EtcdServer behind the peer listener."""

    def __init__(self, member_id: int) -> None:
        self._member_id = member_id
        self.stepped: list[Message] = []
        self.proposed: list[bytes] = []
        self.propose_error: Exception | None = None

    @property
    def cluster_id(self) -> int:
        return CLUSTER_ID

    @property
    def member_id(self) -> int:
        return self._member_id

    def step_peer_message(self, msg: Message) -> None:
        self.stepped.append(msg)

    def propose_forwarded(self, data: bytes, conf: bool = False) -> None:
        if self.propose_error is not None:
            raise self.propose_error
        self.proposed.append(data)

    def members_json(self) -> bytes:
        return b"[]"

    def is_removed_member(self, member_id: int) -> bool:
        return False

    async def promote_as_leader(self, member_id: int) -> None:
        return None


class FakeNode:
    def __init__(self) -> None:
        self.unreachable: list[int] = []
        self.snapshots: list[tuple[int, bool]] = []

    def report_unreachable(self, node_id: int) -> None:
        self.unreachable.append(node_id)

    def report_snapshot(self, node_id: int, *, failed: bool) -> None:
        self.snapshots.append((node_id, failed))

    async def snapshot_data(self, meta: SnapshotMeta) -> bytes:
        raise FileNotFoundError("this fake keeps no snapshot on disk")


async def until(pred: object, timeout_s: float = 5.0) -> None:
    assert callable(pred)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_peer_app_checks_cluster_id_and_routes() -> None:
    handler = FakeHandler(ME)
    transport = httpx.ASGITransport(app=PeerApp(handler))
    async with httpx.AsyncClient(transport=transport, base_url="http://peer") as c:
        body = encode_batch(
            [Message(MsgType.HEARTBEAT, to=ME, frm=LIVE, term=2), Message(MsgType.APP, to=99)]
        )
        r = await c.post("/raft/message", content=body, headers={"X-Etcd-Cluster-Id": "abc"})
        assert r.status_code == 412 and handler.stepped == []
        r = await c.post("/raft/message", content=body)  # no header at all
        assert r.status_code == 412
        good = {"X-Etcd-Cluster-Id": format(CLUSTER_ID, "x")}
        r = await c.post("/raft/message", content=body, headers=good)
        assert r.status_code == 204
        assert [m.type for m in handler.stepped] == [MsgType.HEARTBEAT]  # not the one for member 99
        r = await c.post("/raft/message", content=b"\x01\x00", headers=good)
        assert r.status_code == 400
        assert (await c.get("/raft/message", headers=good)).status_code == 405
        assert (await c.post("/raft/nothing", headers=good)).status_code == 404
        r = await c.post("/raft/propose", content=b"entry", headers=good)
        assert r.status_code == 204 and handler.proposed == [b"entry"]
        handler.propose_error = NotLeader(LIVE)
        r = await c.post("/raft/propose", content=b"entry", headers=good)
        assert r.status_code == 409 and r.headers["x-etcd-leader"] == format(LIVE, "x")
        handler.propose_error = ProposalDropped()
        assert (await c.post("/raft/propose", content=b"e", headers=good)).status_code == 503


@pytest.mark.anyio
async def test_dead_peer_is_reported_and_never_blocks_the_live_one() -> None:
    live = FakeHandler(LIVE)
    async with serve_peer(PeerApp(live)) as live_url:
        (dead_port,) = CLUSTER_PORTS.allocate(1)
        node = FakeNode()
        t = PeerTransport(
            ME, CLUSTER_ID, {ME: ("x",), LIVE: (live_url,), DEAD: (f"http://127.0.0.1:{dead_port}",)}
        )
        t.start(node)
        try:
            snap = Snapshot(SnapshotMeta(9, 2), b"state")
            for i in range(1, 201):
                t.send(
                    [
                        Message(
                            MsgType.APP,
                            to=LIVE,
                            frm=ME,
                            term=2,
                            index=i,
                            entries=(Entry(2, i + 1, data=b"x"),),
                        ),
                        Message(MsgType.APP, to=DEAD, frm=ME, term=2, index=i),
                    ]
                )
            t.send([Message(MsgType.SNAP, to=LIVE, frm=ME, term=2, snapshot=snap)])
            t.send([Message(MsgType.SNAP, to=DEAD, frm=ME, term=2, snapshot=snap)])
            await until(lambda: len(live.stepped) == 201)
            # appends in order, batched; the snapshot travels on its own route and may overtake them
            assert [m.index for m in live.stepped if m.type is MsgType.APP] == list(range(1, 201))
            assert [m.snapshot for m in live.stepped if m.type is MsgType.SNAP] == [snap]
            await until(
                lambda: (
                    DEAD in node.unreachable
                    and (DEAD, True) in node.snapshots
                    and (LIVE, False) in node.snapshots
                )
            )
            assert LIVE not in node.unreachable
            assert t.sent_append_count == 200
            stats = t.follower_stats()
            assert stats[format(LIVE, "x")]["counts"]["fail"] == 0
            assert stats[format(DEAD, "x")]["counts"]["fail"] >= 1
            # Forwarding: accepted by a leader, refused by a dead address (safe to retry).
            assert (await t.forward(LIVE, b"cmd")).outcome is ForwardOutcome.ACCEPTED
            assert live.proposed == [b"cmd"]
            assert (await t.forward(DEAD, b"cmd")).outcome is ForwardOutcome.REFUSED
            live.propose_error = NotLeader(DEAD)
            result = await t.forward(LIVE, b"cmd")
            assert (result.outcome, result.leader_hint) == (ForwardOutcome.REFUSED, DEAD)
        finally:
            await t.stop()


@pytest.mark.anyio
async def test_stop_ends_a_sender_cancelled_just_as_a_message_arrives() -> None:
    """The raft loop queues a message and the server stops in the same loop turn: the sender's
    wait for the queue completes and is cancelled at once. Python 3.11's asyncio.wait_for then
    returned the message instead of raising, and the sender looped on until SIGKILL."""
    (dead_port,) = CLUSTER_PORTS.allocate(1)
    for _ in range(20):
        t = PeerTransport(ME, CLUSTER_ID, {DEAD: (f"http://127.0.0.1:{dead_port}",)})
        t.start(FakeNode())
        await asyncio.sleep(0.01)  # the sender waits on its queue
        t.send([Message(MsgType.HEARTBEAT, to=DEAD, frm=ME, term=3)])
        await asyncio.wait_for(t.stop(), 5)
