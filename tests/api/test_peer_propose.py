"""/raft/propose refuses what no member could apply: a garbage entry in the log would stop the
raft loop of every member, and again at every restart (found by posting 60 MB of zeros)."""

from __future__ import annotations

import httpx
import pytest

from app.server import EtcdServer
from store.commands import V2Set, encode
from tests.api.conftest import asgi_client, make_app

PEER_URL = "http://127.0.0.1:2380"
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", b"\x00" * 1000),
        ("", b"[1, 2]"),
        ("", b'{"not": "a command"}'),
        ("conf=1", b"\x00" * 10),
        ("conf=1", b'{"req": 1, "op": "no-such-op", "id": 2, "peerURLs": []}'),
        ("conf=1", b"[]"),
    ],
)
async def test_undecodable_proposals_are_refused_and_the_member_keeps_serving(
    server: EtcdServer, query: str, body: bytes
) -> None:
    assert server.peer_app is not None
    headers = {"X-Etcd-Cluster-ID": format(server.cluster_id, "x")}
    last = server.node.storage.last_index()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.peer_app), base_url=PEER_URL) as peer:
        resp = await peer.post(f"/raft/propose?{query}" if query else "/raft/propose", content=body, headers=headers)
        assert resp.status_code == 400
        assert resp.text == "undecodable proposal\n"
        assert server.node.storage.last_index() == last  # nothing reached the log
        # A well-formed one is still taken.
        ok = await peer.post("/raft/propose", content=encode(7, V2Set("/1/p", "v", False, None, False)), headers=headers)
        assert ok.status_code == 204
    async with asgi_client(make_app(server)) as client:
        put = await client.put("/v2/keys/after", data={"value": "ok"})
        assert put.status_code == 201
        assert (await client.get("/v2/keys/p")).json()["node"]["value"] == "v"
    assert server.node.failure is None
