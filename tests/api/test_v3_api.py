"""The v3 gateway end to end (unary calls): EtcdServer with the v3 backend, in process,
through httpx.ASGITransport. Expected bodies follow golden/v3.jsonl."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.v3_fixtures import V3Server, asgi_client, b64, running_v3_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[V3Server]:
    async with running_v3_server(tmp_path / "data") as s:
        yield s


@pytest.fixture
async def c(srv: V3Server) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(srv) as client:
        yield client


async def post(c: httpx.AsyncClient, path: str, body: Any = None, raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return await c.post(path, content=content)


def hdr(srv: V3Server, revision: int | None) -> dict[str, str]:
    h = {"cluster_id": str(srv.cluster_id), "member_id": str(srv.member_id)}
    if revision:
        h["revision"] = str(revision)
    h["raft_term"] = str(srv.node.term)
    return h


async def test_put_range_headers_and_shapes(srv: V3Server, c: httpx.AsyncClient) -> None:
    r = await post(c, "/v3/kv/put", {"key": b64("p/a"), "value": b64("1")})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["grpc-metadata-content-type"] == "application/grpc"
    assert r.headers["x-etcd-cluster-id"] == format(srv.cluster_id, "x")
    assert {"x-raft-index", "x-raft-term", "x-etcd-index"} <= set(r.headers)
    assert r.content == json.dumps({"header": hdr(srv, 2)}, separators=(",", ":")).encode()
    r = await post(c, "/v3/kv/put", {"key": b64("p/a"), "value": b64("2"), "prev_kv": True})
    assert r.json()["prev_kv"] == {
        "key": b64("p/a"),
        "create_revision": "2",
        "mod_revision": "2",
        "version": "1",
        "value": b64("1"),
    }
    await post(c, "/v3/kv/put", {"key": b64("p/empty")})
    r = await post(c, "/v3/kv/range", {"key": b64("p/"), "range_end": b64("p0"), "limit": "1"})
    assert r.json() == {
        "header": hdr(srv, 4),
        "kvs": [
            {
                "key": b64("p/a"),
                "create_revision": "2",
                "mod_revision": "3",
                "version": "2",
                "value": b64("2"),
            }
        ],
        "more": True,
        "count": "2",
    }
    r = await post(c, "/v3/kv/range", {"key": b64("p/empty"), "serializable": True})
    assert "value" not in r.json()["kvs"][0]
    r = await post(c, "/v3/kv/range", {"key": b64("missing")})
    assert r.json() == {"header": hdr(srv, 4)}


async def test_delete_and_txn_shapes(srv: V3Server, c: httpx.AsyncClient) -> None:
    await post(c, "/v3/kv/put", {"key": b64("t/a"), "value": b64("1")})
    r = await post(
        c,
        "/v3/kv/txn",
        {
            "compare": [{"key": b64("t/a"), "target": "VALUE", "result": "EQUAL", "value": b64("1")}],
            "success": [
                {"request_put": {"key": b64("t/b"), "value": b64("2")}},
                {"request_range": {"key": b64("t/a")}},
                {"request_txn": {"success": [{"request_delete_range": {"key": b64("t/zzz")}}]}},
            ],
        },
    )
    assert r.status_code == 200
    assert r.json() == {
        "header": hdr(srv, 3),
        "succeeded": True,
        "responses": [
            {"response_put": {"header": {"revision": "3"}}},
            {
                "response_range": {
                    "header": {"revision": "3"},
                    "kvs": [
                        {
                            "key": b64("t/a"),
                            "create_revision": "2",
                            "mod_revision": "2",
                            "version": "1",
                            "value": b64("1"),
                        }
                    ],
                    "count": "1",
                }
            },
            {
                "response_txn": {
                    "header": {},
                    "succeeded": True,
                    "responses": [{"response_delete_range": {"header": {"revision": "3"}}}],
                }
            },
        ],
    }
    r = await post(c, "/v3/kv/txn", {"compare": [{"key": b64("t/a"), "target": "VALUE", "value": b64("x")}]})
    assert r.json() == {"header": hdr(srv, 3)}
    r = await post(c, "/v3/kv/deleterange", {"key": b64("t/"), "range_end": b64("t0"), "prev_kv": True})
    body = r.json()
    assert body["deleted"] == "2" and len(body["prev_kvs"]) == 2 and body["header"]["revision"] == "4"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "message"),
    [
        ("/v3/kv/put", {"value": b64("x")}, 400, 3, "etcdserver: key is not provided"),
        ("/v3/kv/range", None, 400, 3, "etcdserver: key is not provided"),
        ("/v3/kv/put", {"key": b64("m"), "ignore_value": True}, 400, 3, "etcdserver: key not found"),
        (
            "/v3/kv/put",
            {"key": b64("m"), "value": b64("x"), "ignore_value": True},
            400,
            3,
            "etcdserver: value is provided",
        ),
        ("/v3/kv/put", {"key": b64("m"), "lease": "99"}, 404, 5, "etcdserver: requested lease not found"),
        ("/v3/kv/txn", {"success": [{}]}, 400, 3, "etcdserver: key not found"),
        (
            "/v3/kv/txn",
            {"success": [{"request_put": {"key": b64("d")}}, {"request_delete_range": {"key": b64("d")}}]},
            400,
            3,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            "/v3/kv/range",
            {"key": b64("a"), "revision": "9223372036854775807"},
            400,
            11,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "/v3/kv/compaction",
            {"revision": 100},
            400,
            11,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        ("/v3/lease/grant", {"TTL": "9000000001"}, 400, 11, "etcdserver: too large lease TTL"),
        ("/v3/lease/revoke", {}, 404, 5, "etcdserver: requested lease not found"),
        ("/v3/cluster/member/remove", {"ID": "1234"}, 404, 5, "etcdserver: member not found"),
        (
            "/v3/cluster/member/add",
            {"peerURLs": ["not-a-url"]},
            400,
            3,
            "etcdserver: given member URLs are invalid",
        ),
        (
            "/v3/cluster/member/add",
            {"peerURLs": ["http://127.0.0.1:2380"]},
            412,
            9,
            "etcdserver: Peer URLs already exists",
        ),
        (
            "/v3/maintenance/transfer-leadership",
            {"targetID": "1"},
            412,
            9,
            "etcdserver: bad leader transferee",
        ),
        ("/v3/auth/user/list", {}, 501, 12, "unknown service etcdserverpb.Auth"),
    ],
)
async def test_errors_use_the_unary_envelope(
    c: httpx.AsyncClient, path: str, body: Any, status: int, code: int, message: str
) -> None:
    r = await post(c, path, body)
    assert r.status_code == status
    assert r.json() == {"error": message, "message": message, "code": code}
    assert r.headers["trailer"] == "Grpc-Trailer-Content-Type"
    assert "content-length" not in r.headers and "grpc-metadata-content-type" not in r.headers


async def test_decode_errors_are_answered_by_the_gateway(c: httpx.AsyncClient) -> None:
    r = await post(c, "/v3/kv/range", raw=b'{"key": "cmIvYQ"}')
    assert r.status_code == 400
    assert r.json() == {
        "error": "illegal base64 data at input byte 4",
        "message": "illegal base64 data at input byte 4",
        "code": 3,
    }
    assert r.headers["content-length"] == str(len(r.content)) and "trailer" not in r.headers


async def test_routing(c: httpx.AsyncClient) -> None:
    r = await c.get("/v3/kv/range")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        405,
        "Method Not Allowed\n",
        "text/plain; charset=utf-8",
    )
    assert "allow" not in r.headers and r.headers["x-content-type-options"] == "nosniff"
    for path in ("/v3/kv/nothing", "/v3/kv/range/"):
        r = await post(c, path, {"key": b64("a")})
        assert (r.status_code, r.text) == (404, "Not Found\n")
    r = await post(c, "/v3alpha/kv/range", {"key": b64("a")})
    assert (r.status_code, r.text) == (404, "404 page not found\n")
    r = await post(c, "/v3beta/kv/range", {"key": b64("a")})
    assert r.status_code == 200 and "header" in r.json()
    r = await c.options("/v3/kv/range")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*" and r.text == ""
    r = await c.post(
        "/v3/kv/range",
        content=b"",
        headers={"content-type": "application/x-www-form-urlencoded", "x-http-method-override": "GET"},
    )
    assert r.status_code == 405


async def test_size_limits(c: httpx.AsyncClient) -> None:
    r = await post(c, "/v3/kv/put", {"key": b64("big"), "value": b64("z" * (1536 * 1024))})
    assert (r.status_code, r.json()["message"]) == (400, "etcdserver: request is too large")
    r = await post(c, "/v3/kv/put", {"key": b64("big"), "value": b64("z" * (1500 * 1024))})
    assert r.status_code == 200
    r = await post(c, "/v3/kv/put", {"key": b64("big"), "value": b64("z" * 2150400)})
    assert r.status_code == 429
    assert r.json()["message"] == "grpc: received message larger than max (2150410 vs. 2097152)"
    # a big answer is chunked, like Go's ResponseWriter
    r = await post(c, "/v3/kv/range", {"key": b64("big")})
    assert r.status_code == 200 and "content-length" not in r.headers


async def test_leases(srv: V3Server, c: httpx.AsyncClient) -> None:
    r = await post(c, "/v3/lease/grant", {"TTL": "60"})
    lease = r.json()
    assert lease["TTL"] == "60" and int(lease["ID"]) > 0
    r = await post(c, "/v3/lease/grant", {"TTL": 1, "ID": -3})
    assert r.json()["ID"] == "-3" and r.json()["TTL"] == "2"  # raised to the minimum
    r = await post(c, "/v3/lease/grant", {"TTL": 5, "ID": "-3"})
    assert (r.status_code, r.json()["message"]) == (412, "etcdserver: lease already exists")
    await post(c, "/v3/kv/put", {"key": b64("l/a"), "value": b64("1"), "lease": lease["ID"]})
    r = await post(c, "/v3/lease/timetolive", {"ID": lease["ID"], "keys": True})
    assert r.json() == {
        "header": hdr(srv, 2),
        "ID": lease["ID"],
        "TTL": "59",
        "grantedTTL": "60",
        "keys": [b64("l/a")],
    }
    r = await post(c, "/v3/kv/lease/timetolive", {"ID": "123"})
    assert r.json() == {"header": hdr(srv, 2), "ID": "123", "TTL": "-1"}
    r = await post(c, "/v3/lease/leases", {})
    assert sorted(x["ID"] for x in r.json()["leases"]) == sorted([lease["ID"], "-3"])
    r = await post(c, "/v3/kv/lease/revoke", {"ID": lease["ID"]})
    assert r.json() == {"header": hdr(srv, 3)}
    r = await post(c, "/v3/kv/range", {"key": b64("l/a")})
    assert "kvs" not in r.json()


async def test_maintenance_and_cluster(srv: V3Server, c: httpx.AsyncClient) -> None:
    r = await post(c, "/v3/maintenance/status", {})
    st = r.json()
    assert st["version"] == "3.4.23" and st["leader"] == str(srv.member_id)
    assert list(st) == [
        "header",
        "version",
        "dbSize",
        "leader",
        "raftIndex",
        "raftTerm",
        "raftAppliedIndex",
        "dbSizeInUse",
    ]
    for path in ("/v3/maintenance/alarm", "/v3/maintenance/defragment"):
        r = await post(c, path, {})
        assert (r.status_code, r.text) == (200, "{}")
    r = await post(c, "/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": "1", "alarm": "NOSPACE"})
    assert r.text == "{}"
    r = await post(c, "/v3/maintenance/transfer-leadership", {"targetID": str(srv.member_id)})
    assert (r.status_code, r.text) == (200, "{}")
    r = await post(c, "/v3/maintenance/hash", {"revision": "0"})
    assert isinstance(r.json()["hash"], int)
    r = await post(c, "/v3/cluster/member/list", {})
    assert r.json() == {
        "header": hdr(srv, None),
        "members": [
            {
                "ID": str(srv.member_id),
                "name": "default",
                "peerURLs": ["http://127.0.0.1:2380"],
                "clientURLs": ["http://127.0.0.1:2379"],
            }
        ],
    }
    r = await post(
        c, "/v3/cluster/member/update", {"ID": str(srv.member_id), "peerURLs": ["http://127.0.0.1:2380"]}
    )
    assert r.status_code == 200 and r.json()["members"][0]["name"] == "default"
    r = await post(c, "/v3/cluster/member/promote", {"ID": str(srv.member_id)})
    assert (r.status_code, r.json()["message"]) == (412, "etcdserver: can only promote a learner member")
    r = await post(c, "/v3/cluster/member/remove", {"ID": str(srv.member_id)})
    assert r.status_code == 412


async def test_compaction(srv: V3Server, c: httpx.AsyncClient) -> None:
    for v in "123":
        await post(c, "/v3/kv/put", {"key": b64("cp/a"), "value": b64(v)})
    r = await post(c, "/v3/kv/compaction", {"revision": "3"})
    assert r.json() == {"header": hdr(srv, 4)}
    r = await post(c, "/v3/kv/range", {"key": b64("cp/a"), "revision": 2})
    assert r.json()["message"] == "etcdserver: mvcc: required revision has been compacted"
    r = await post(c, "/v3/kv/range", {"key": b64("cp/a"), "revision": 3})
    assert r.json()["kvs"][0]["value"] == b64("2")


async def test_quota_raises_nospace_until_compaction_defrag_and_disarm(tmp_path: Path) -> None:
    # An empty store reports 24576 bytes (as a fresh etcd does); a 32 KiB quota fills quickly.
    async with running_v3_server(tmp_path / "q", quota_backend_bytes=32 * 1024) as s, asgi_client(s) as qc:
        ok = await post(qc, "/v3/kv/put", {"key": b64("a"), "value": b64("x" * 1000)})
        assert ok.status_code == 200
        full = await post(qc, "/v3/kv/put", {"key": b64("b"), "value": b64("y" * 20_000)})
        assert full.status_code == 429
        assert full.json()["message"] == "etcdserver: mvcc: database space exceeded"
        alarms = await post(qc, "/v3/maintenance/alarm", {"action": "GET"})
        assert alarms.json()["alarms"] == [{"memberID": str(s.member_id), "alarm": "NOSPACE"}]
        # with the alarm raised even a small put is refused; deletes still work
        small = await post(qc, "/v3/kv/put", {"key": b64("c"), "value": b64("z")})
        assert small.status_code == 429
        assert (await post(qc, "/v3/kv/deleterange", {"key": b64("a")})).status_code == 200
        rev = (await post(qc, "/v3/kv/range", {"key": b64("a")})).json()["header"]["revision"]
        assert (await post(qc, "/v3/kv/compaction", {"revision": rev})).status_code == 200
        assert (await post(qc, "/v3/maintenance/defragment", {})).status_code == 200
        disarm = await post(
            qc,
            "/v3/maintenance/alarm",
            {"action": "DEACTIVATE", "memberID": str(s.member_id), "alarm": "NOSPACE"},
        )
        assert disarm.status_code == 200
        assert (await post(qc, "/v3/maintenance/alarm", {"action": "GET"})).json() == {}
        assert (await post(qc, "/v3/kv/put", {"key": b64("c"), "value": b64("z")})).status_code == 200
