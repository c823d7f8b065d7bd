"""The streamed snapshot request: raft.codec's header, PeerApp's /raft/snapshot, PeerTransport's sender.

The route is driven in process through httpx.ASGITransport, which hands the body to the app in
the pieces the client yields, so the receiver's chunk handling is exercised with odd sizes. The
sender tests serve a PeerApp as etcdpy's peer port does, on 127.0.0.1 (the cluster suite's ports); a dead peer
is a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import httpx
import pytest

from app import peers
from app.peers import SNAPSHOT_ROUTE, PeerApp, PeerTransport
from raft.codec import (
    SNAPSHOT_PREFIX_SIZE,
    CodecError,
    decode_snapshot_header,
    decode_snapshot_prefix,
    encode_batch,
    encode_snapshot_header,
)
from raft.core.types import ConfState, Entry, Message, MsgType, Snapshot, SnapshotMeta
from tests.cluster.helpers import CLUSTER_PORTS
from tests.cluster.helpers import serve_peer_port as serve

pytestmark = pytest.mark.timeout(60)

CLUSTER_ID = 0xE458568F1C5FEE81
ME, LIVE, DEAD = 0x11, 0x22, 0x33
GOOD = {"X-Etcd-Cluster-Id": format(CLUSTER_ID, "x"), "X-Server-From": format(LIVE, "x")}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def snap_message(data: bytes, to: int = ME, frm: int = LIVE) -> Message:
    meta = SnapshotMeta(index=7000, term=3, conf_state=ConfState(voters=(ME, LIVE, DEAD)))
    return Message(MsgType.SNAP, to=to, frm=frm, term=3, snapshot=Snapshot(meta=meta, data=data))


def pieces(blob: bytes, sizes: Iterable[int]) -> list[bytes]:
    """blob cut into pieces of the given sizes, cycling, so boundaries fall mid-header too."""
    out: list[bytes] = []
    sizes = list(sizes)
    pos = i = 0
    while pos < len(blob):
        n = sizes[i % len(sizes)]
        out.append(blob[pos : pos + n])
        pos += n
        i += 1
    return out


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


class FakeHandler:
    """Stands in for EtcdServer behind the peer listener."""

    def __init__(self, member_id: int) -> None:
        self._member_id = member_id
        self.stepped: list[Message] = []

    @property
    def cluster_id(self) -> int:
        return CLUSTER_ID

    @property
    def member_id(self) -> int:
        return self._member_id

    def step_peer_message(self, msg: Message) -> None:
        self.stepped.append(msg)

    def propose_forwarded(self, data: bytes, conf: bool = False) -> None:
        raise AssertionError("not used here")

    def is_removed_member(self, member_id: int) -> bool:
        return False


class FakeNode:
    def __init__(self) -> None:
        self.unreachable: list[int] = []
        self.snapshots: list[tuple[int, bool]] = []
        self.on_disk: dict[tuple[int, int], bytes] = {}  # (index, term) -> data
        self.reads: list[int] = []

    def report_unreachable(self, node_id: int) -> None:
        self.unreachable.append(node_id)

    def report_snapshot(self, node_id: int, *, failed: bool) -> None:
        self.snapshots.append((node_id, failed))

    async def snapshot_data(self, meta: SnapshotMeta) -> bytes:
        self.reads.append(meta.index)
        data = self.on_disk.get((meta.index, meta.term))
        if data is None:
            raise FileNotFoundError(f"no snapshot file for index {meta.index}")
        return data


async def post_snapshot(
    app: PeerApp, chunks: list[bytes], headers: Mapping[str, str] = GOOD, length: int | None = None
) -> httpx.Response:
    hdrs = dict(headers)
    if length is not None:
        hdrs["Content-Length"] = str(length)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://peer") as c:
        return await c.post(SNAPSHOT_ROUTE, content=stream(chunks), headers=hdrs)


# ---- codec -----------------------------------------------------------------------------------


def test_header_round_trip_leaves_the_data_out() -> None:
    data = bytes(range(256)) * 40
    m = snap_message(data)
    header = encode_snapshot_header(m)
    assert len(header) < 200  # the data is not in it
    header_len, data_len = decode_snapshot_prefix(header[:SNAPSHOT_PREFIX_SIZE])
    assert (SNAPSHOT_PREFIX_SIZE + header_len, data_len) == (len(header), len(data))
    decoded = decode_snapshot_header(header[SNAPSHOT_PREFIX_SIZE:])
    assert decoded.snapshot is not None and decoded.snapshot.data == b""
    assert decoded == snap_message(b"")


def test_codec_refuses_what_is_not_a_snapshot_request() -> None:
    with pytest.raises(ValueError):
        encode_snapshot_header(Message(MsgType.APP, to=ME))
    header = encode_snapshot_header(snap_message(b"abc"))
    with pytest.raises(CodecError):
        decode_snapshot_prefix(b"\x09" + header[1:SNAPSHOT_PREFIX_SIZE])  # unknown version
    with pytest.raises(CodecError):
        decode_snapshot_prefix(header[: SNAPSHOT_PREFIX_SIZE - 1])
    with pytest.raises(CodecError):
        decode_snapshot_header(header[SNAPSHOT_PREFIX_SIZE:-1])  # truncated
    with pytest.raises(CodecError):  # a batch's message is not a SNAP header
        decode_snapshot_header(encode_batch([Message(MsgType.HEARTBEAT, to=ME)])[5:])


# ---- receiving -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streamed_request_in_odd_pieces_is_stepped_whole() -> None:
    handler = FakeHandler(ME)
    app = PeerApp(handler)
    data = b"".join(i.to_bytes(4, "big") for i in range(50_000))  # 200 kB, every piece distinct
    m = snap_message(data)
    body = encode_snapshot_header(m) + data
    r = await post_snapshot(app, pieces(body, [3, 1, 17, 4096, 65536]), length=len(body))
    assert r.status_code == 204, r.text
    assert handler.stepped == [m]
    # chunked transfer (no Content-Length) is accepted as well
    r = await post_snapshot(app, pieces(body, [100_000]))
    assert r.status_code == 204 and handler.stepped == [m, m]
    assert app.snapshot_receive_success == {LIVE: 2}
    assert 'etcd_network_snapshot_receive_success{From="22"} 2' in app.metric_lines()


@pytest.mark.anyio
async def test_truncated_malformed_or_misaddressed_requests_are_rejected() -> None:
    handler = FakeHandler(ME)
    app = PeerApp(handler)
    data = b"s" * 10_000
    header = encode_snapshot_header(snap_message(data))
    full = len(header) + len(data)
    cases: list[tuple[str, list[bytes], int | None, int]] = [
        ("data cut short", [header, data[:9_999]], full, 400),
        ("data cut short, chunked", [header, data[:5_000]], None, 400),
        ("header cut short", [header[:20]], None, 400),
        ("trailing bytes", [header, data, b"x"], None, 400),
        ("length disagrees with header", [header, data], full + 1, 400),
        ("not a snapshot header", [b"\x01" + header[1:5] + b"\x00" * 8, b"junk"], None, 400),
        ("for another member", [encode_snapshot_header(snap_message(data, to=DEAD)), data], full, 400),
    ]
    for what, chunks, length, status in cases:
        r = await post_snapshot(app, chunks, length=length)
        assert r.status_code == status, (what, r.text)
    too_big = header[:5] + (peers.MAX_SNAPSHOT_BYTES + 1).to_bytes(8, "big") + header[SNAPSHOT_PREFIX_SIZE:]
    assert (await post_snapshot(app, [too_big])).status_code == 413
    assert handler.stepped == []
    assert app.snapshot_receive_failures == {LIVE: len(cases) + 1}


@pytest.mark.anyio
async def test_wrong_cluster_id_is_refused_before_the_body_is_read() -> None:
    handler = FakeHandler(ME)
    app = PeerApp(handler)
    data = b"d" * 1000
    read: list[bytes] = []

    async def watched() -> AsyncIterator[bytes]:
        for c in (encode_snapshot_header(snap_message(data)), data):
            read.append(c)
            yield c

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://peer") as c:
        for headers in ({"X-Etcd-Cluster-Id": "abc"}, {}):
            read.clear()
            r = await c.post(SNAPSHOT_ROUTE, content=watched(), headers=headers)
            assert r.status_code == 412
            assert read == []  # answered from the headers; not one chunk was pulled
        assert (await c.get(SNAPSHOT_ROUTE, headers=GOOD)).status_code == 405
    assert handler.stepped == []


@pytest.mark.anyio
async def test_receiver_holds_the_snapshot_once() -> None:
    size = 24 << 20
    source = memoryview(b"\xab" * size)
    chunks = [source[i : i + 65536] for i in range(0, size, 65536)]  # views: no copies made here
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages[-1]["more_body"] = False
    it = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(it)

    tracemalloc.start()
    try:
        data = await peers._BodyStream(receive).read_exact(size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == size and data[:2] == b"\xab\xab" and data[-1:] == b"\xab"
    assert peak < size * 1.1, f"peak {peak / size:.2f}x the snapshot size"


# ---- sending ---------------------------------------------------------------------------------


async def until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class GatedSnapshots:
    """PeerApp behind a gate on /raft/snapshot only: a slow snapshot transfer, on demand."""

    def __init__(self, app: PeerApp) -> None:
        self.app = app
        self.gate = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == SNAPSHOT_ROUTE:
            self.waiting += 1
            await self.gate.wait()
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_snapshot_goes_on_its_own_request_and_does_not_block_messages() -> None:
    live = FakeHandler(LIVE)
    gated = GatedSnapshots(PeerApp(live))
    async with serve(gated) as live_url:
        (dead_port,) = CLUSTER_PORTS.allocate(1)
        node = FakeNode()
        t = PeerTransport(ME, CLUSTER_ID, {LIVE: (live_url,), DEAD: (f"http://127.0.0.1:{dead_port}",)})
        t.start(node)
        try:
            data = bytes(range(256)) * (12 << 12)  # 12 MiB: many chunks
            snap = snap_message(data, to=LIVE, frm=ME)
            t.send([snap])
            await until(lambda: gated.waiting == 1)
            # While the snapshot is held up, appends and heartbeats still reach the peer ...
            t.send(
                [
                    Message(MsgType.APP, to=LIVE, frm=ME, term=3, index=i, entries=(Entry(3, i + 1),))
                    for i in range(5)
                ]
            )
            t.send([Message(MsgType.HEARTBEAT, to=LIVE, frm=ME, term=3)])
            await until(lambda: len(live.stepped) == 6)
            assert [m.type for m in live.stepped] == [MsgType.APP] * 5 + [MsgType.HEARTBEAT]
            # ... and a second SNAP while one is in flight is refused at once, not queued.
            t.send([snap])
            assert node.snapshots == [(LIVE, True)]
            gated.gate.set()
            await until(lambda: len(node.snapshots) == 2)
            assert node.snapshots[1] == (LIVE, False)
            assert live.stepped[-1] == snap
            # A dead peer: reported failed and unreachable.
            t.send([snap_message(b"x" * 100, to=DEAD, frm=ME)])
            await until(lambda: (DEAD, True) in node.snapshots)
            assert DEAD in node.unreachable and LIVE not in node.unreachable
            assert t.snapshot_send_success == {LIVE: 1} and t.snapshot_send_failures == {DEAD: 1}
            assert 'etcd_network_snapshot_send_success{To="22"} 1' in t.metric_lines()
        finally:
            gated.gate.set()  # never leave a request parked: the server waits for it on exit
            await t.stop()


async def discard(scope: Any, receive: Any, send: Any) -> None:
    """A peer that reads and drops whatever it gets: only the sender's memory is measured."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.anyio
async def test_sender_never_copies_the_whole_snapshot() -> None:
    size = 32 << 20
    data = b"\xcd" * size
    async with serve(discard) as url:
        node = FakeNode()
        t = PeerTransport(ME, CLUSTER_ID, {LIVE: (url,)})
        t.start(node)
        try:
            tracemalloc.start()
            t.send([snap_message(data, to=LIVE, frm=ME)])
            await until(lambda: bool(node.snapshots), timeout_s=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await t.stop()
    assert node.snapshots == [(LIVE, False)]
    # The old in-batch path built the body twice (bytearray, then bytes): >= 2x.
    assert peak < size * 0.25, f"sender peak {peak / size:.2f}x the snapshot size"


@pytest.mark.anyio
async def test_a_snapshot_kept_on_disk_is_read_for_its_send() -> None:
    live = FakeHandler(LIVE)
    async with serve(PeerApp(live)) as live_url:
        node = FakeNode()
        data = bytes(range(256)) * 4096  # 1 MiB
        node.on_disk[(7000, 3)] = data
        t = PeerTransport(ME, CLUSTER_ID, {LIVE: (live_url,)})
        t.start(node)
        try:
            # the core's message carries no data: the storage holds the snapshot on disk only
            t.send([snap_message(b"", to=LIVE, frm=ME)])
            await until(lambda: bool(node.snapshots))
            assert node.snapshots == [(LIVE, False)] and node.reads == [7000]
            assert live.stepped == [snap_message(data, to=LIVE, frm=ME)]  # the peer got it whole
            # its file gone (a newer snapshot replaced it): this send fails, nothing is posted
            del node.on_disk[(7000, 3)]
            t.send([snap_message(b"", to=LIVE, frm=ME)])
            await until(lambda: len(node.snapshots) == 2)
            assert node.snapshots[1] == (LIVE, True) and len(live.stepped) == 1
            assert t.snapshot_send_failures == {LIVE: 1}
        finally:
            await t.stop()
