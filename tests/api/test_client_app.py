"""ClientApp's access layer and small endpoints: 404/405, OPTIONS, CORS, 301, members, stats,
version, health, --enable-v2=false, and a restart on the same data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.asgi import ClientApp
from app.server import EtcdServer
from app.version import ETCDPY_VERSION
from tests.api.conftest import CLIENT_URL, PEER_URL, asgi_client, make_app, running_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

CORS = {
    "access-control-allow-headers": "accept, content-type, authorization",
    "access-control-allow-methods": "POST, GET, OPTIONS, PUT, DELETE",
    "access-control-allow-origin": "*",
}


def assert_cors(r: httpx.Response, origin: str = "*") -> None:
    for name, value in CORS.items():
        assert r.headers[name] == (origin if name == "access-control-allow-origin" else value)


@pytest.mark.parametrize(
    "path", ["/", "/v2", "/v2/", "/v2/keysx", "/v3alpha/kv/range", "/v2/machines/", "/v2/stats", "/v2/stats/"]
)
async def test_unknown_paths_are_go_404(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.content == b"404 page not found\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-length"] == "19"
    assert_cors(r)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/version", "GET"),
        ("HEAD", "/version", "GET"),
        ("POST", "/health", "GET"),
        ("PUT", "/v2/machines", "GET,HEAD"),
        ("PUT", "/v2/stats/store", "GET"),
        ("HEAD", "/v2/stats/self", "GET"),
        ("PATCH", "/v2/members", "GET,POST,DELETE,PUT"),
        ("HEAD", "/v2/members", "GET,POST,DELETE,PUT"),
        ("PATCH", "/v2/keys/a", "HEAD,GET,PUT,POST,DELETE"),
    ],
)
async def test_method_not_allowed(client: httpx.AsyncClient, method: str, path: str, allow: str) -> None:
    r = await client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-length"] == "19"
    assert r.content == (b"" if method == "HEAD" else b"Method Not Allowed\n")
    assert_cors(r)


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
async def test_members_without_id_is_405_without_allow(
    client: httpx.AsyncClient, server: EtcdServer, method: str
) -> None:
    r = await client.request(method, "/v2/members")
    assert r.status_code == 405 and "allow" not in r.headers
    assert r.content == b"Method Not Allowed\n"
    assert r.headers["x-etcd-cluster-id"] == format(server.cluster_id, "x")


@pytest.mark.parametrize("path", ["/v2/keys/a", "/nowhere", "/version", "/v2/keys//x"])
async def test_options_short_circuits_every_path(
    client: httpx.AsyncClient, server: EtcdServer, path: str
) -> None:
    before = server.v2.current_index
    r = await client.options(path)
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")
    assert_cors(r)
    assert server.v2.current_index == before


async def test_cors_whitelist_echoes_exact_origins_only(server: EtcdServer) -> None:
    app = make_app(server, cors=("http://dash.example:8080",))
    async with asgi_client(app) as c:
        r = await c.get("/v2/keys", headers={"Origin": "http://dash.example:8080"})
        assert_cors(r, "http://dash.example:8080")
        for origin in ("http://DASH.example:8080", "http://other:1"):
            r = await c.get("/v2/keys", headers={"Origin": origin})
            assert not any(h.startswith("access-control-") for h in r.headers)
        r = await c.options("/v2/keys", headers={"Origin": "http://other:1"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = await c.get("/v2/keys")
        assert "access-control-allow-origin" not in r.headers


async def test_unclean_paths_redirect_keeping_the_query(
    client: httpx.AsyncClient, server: EtcdServer
) -> None:
    r = await client.get("/v2/keys//foo?x=1")
    assert r.status_code == 301
    assert r.headers["location"] == "/v2/keys/foo?x=1"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == b'<a href="/v2/keys/foo?x=1">Moved Permanently</a>.\n\n'
    assert_cors(r)
    before = server.v2.current_index
    r = await client.put("/v2/keys//a?value=1")
    assert (r.status_code, r.content, r.headers["location"]) == (301, b"", "/v2/keys/a?value=1")
    assert "content-type" not in r.headers
    # httpx removes dot segments itself, so these go to the app as raw ASGI requests
    for path, location in [
        ("/v2/keys/./a", "/v2/keys/a"),
        ("/v2/keys/a/..", "/v2/keys"),
        ("/v2/keys/b/a/.", "/v2/keys/b/a"),
        ("/v2/keys/b/./a/", "/v2/keys/b/a/"),
    ]:
        status, headers, content = await raw_request(make_app(server), "PUT", path, b"value=1")
        assert (status, content) == (301, b"")
        assert headers[b"location"] == location.encode() + b"?value=1"
        assert b"content-type" not in headers
    status, headers, content = await raw_request(make_app(server), "GET", "/v2/keys/../x", b"")
    assert (status, headers[b"location"]) == (301, b"/v2/x")
    assert content == b'<a href="/v2/x">Moved Permanently</a>.\n\n'
    assert server.v2.current_index == before  # nothing executed
    r = await client.get("/v2/keys/foo/")  # a single trailing slash is not cleaned
    assert r.status_code == 404 and r.json()["errorCode"] == 100


async def raw_request(
    app: ClientApp, method: str, path: str, query: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:2379")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2379),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content


async def test_version(client: httpx.AsyncClient) -> None:
    r = await client.get("/version")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert not r.content.endswith(b"\n")
    # exactly etcd's two fields: etcd3-py builds EtcdVersion(**body) and fails on any other
    assert r.json() == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
    assert r.headers["x-etcdpy-version"] == ETCDPY_VERSION
    assert "x-etcd-cluster-id" not in r.headers


async def test_health(client: httpx.AsyncClient, server: EtcdServer) -> None:
    raft_before = server.raft_index_term()[0]
    r = await client.get("/health")
    assert (r.status_code, r.content) == (200, b'{"health":"true"}')
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert server.raft_index_term()[0] > raft_before  # each call costs one raft entry


async def test_machines(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/machines")
    assert (r.status_code, r.content) == (200, CLIENT_URL.encode())
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    h = await client.head("/v2/machines")
    assert (h.content, h.headers["content-length"]) == (b"", str(len(CLIENT_URL)))


async def test_members(client: httpx.AsyncClient, server: EtcdServer) -> None:
    me = {
        "id": format(server.member_id, "x"),
        "name": "default",
        "peerURLs": [PEER_URL],
        "clientURLs": [CLIENT_URL],
    }
    for path in ("/v2/members", "/v2/members/"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.content == orjson.dumps({"members": [me]}) + b"\n"
        assert r.headers["x-etcd-cluster-id"] == format(server.cluster_id, "x")
        assert "x-etcd-index" not in r.headers
    r = await client.get("/v2/members/leader")
    assert r.content == orjson.dumps(me) + b"\n"
    r = await client.get("/v2/members/abc")
    assert (r.status_code, r.content) == (404, b'{"message":"Not found"}')
    r = await client.delete("/v2/members/zzzz")
    assert (r.status_code, r.content) == (404, b'{"message":"No such member: zzzz"}')
    r = await client.post("/v2/members", content=b"{}", headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.content) == (
        415,
        b'{"message":"Bad Content-Type text/plain, accept application/json"}',
    )
    r = await client.post(
        "/v2/members", content=b'{"peerURLs":["not a url"]}', headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()) == (
        400,
        {"message": "URL scheme must be http, https, unix, or unixs: not a url"},
    )


async def test_stats(client: httpx.AsyncClient, server: EtcdServer) -> None:
    r = await client.get("/v2/stats/self")
    s = r.json()
    assert r.headers["content-type"] == "application/json" and not r.content.endswith(b"\n")
    assert (s["name"], s["id"], s["state"]) == ("default", format(server.member_id, "x"), "StateLeader")
    assert s["leaderInfo"]["leader"] == format(server.member_id, "x")
    assert (s["recvAppendRequestCnt"], s["sendAppendRequestCnt"]) == (0, 0)
    r = await client.get("/v2/stats/leader")
    assert r.json() == {"leader": format(server.member_id, "x"), "followers": {}}
    await client.put("/v2/keys/s?value=1")
    await client.get("/v2/keys/missing")
    r = await client.get("/v2/stats/store")
    st = r.json()
    assert list(st) == [
        "getsSuccess",
        "getsFail",
        "setsSuccess",
        "setsFail",
        "deleteSuccess",
        "deleteFail",
        "updateSuccess",
        "updateFail",
        "createSuccess",
        "createFail",
        "compareAndSwapSuccess",
        "compareAndSwapFail",
        "compareAndDeleteSuccess",
        "compareAndDeleteFail",
        "expireCount",
        "watchers",
    ]
    assert st["setsSuccess"] >= 1 and st["getsFail"] >= 1 and st["watchers"] == 0
    assert "x-etcd-cluster-id" not in r.headers


async def test_enable_v2_false_hides_every_v2_path(server: EtcdServer) -> None:
    async with asgi_client(make_app(server, enable_v2=False)) as c:
        for path in ("/v2/keys", "/v2/keys/a", "/v2/members", "/v2/machines", "/v2/stats/self"):
            r = await c.get(path)
            assert (r.status_code, r.content) == (404, b"404 page not found\n")
        r = await c.put("/v2/keys/a?value=1")
        assert r.status_code == 404
        assert (await c.get("/version")).status_code == 200
        assert (await c.get("/health")).status_code == 200


async def test_restart_keeps_data_and_publishes_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv, asgi_client(make_app(srv)) as c:
        r = await c.put("/v2/keys/keep/a?value=1")
        assert r.status_code == 201
        await c.put("/v2/keys/keep/b?value=2&ttl=1000")
        index1 = srv.v2.current_index
        term1 = srv.raft_index_term()[1]
        listing1 = (await c.get("/v2/keys/keep?recursive=true&sorted=true")).json()["node"]
    async with running_server(data) as srv2, asgi_client(make_app(srv2)) as c2:
        assert srv2.v2.current_index == index1 + 1  # only the publish of the member's attributes
        assert srv2.raft_index_term()[1] > term1
        r = await c2.get("/v2/keys/keep?recursive=true&sorted=true")
        assert r.status_code == 200
        listing2 = r.json()["node"]
        b1, b2 = listing1["nodes"][1], listing2["nodes"][1]
        assert b2["expiration"] == b1["expiration"]
        b1.pop("ttl"), b2.pop("ttl")
        assert listing2 == listing1
        assert int(r.headers["x-etcd-index"]) == index1 + 1
        assert r.headers["x-raft-term"] == str(srv2.raft_index_term()[1])
        r = await c2.put("/v2/keys/keep/a?value=3&prevValue=1")
        assert r.status_code == 200 and r.json()["node"]["createdIndex"] == 4


async def test_member_peer_url_update_goes_through_the_log(
    client: httpx.AsyncClient, server: EtcdServer
) -> None:
    me = format(server.member_id, "x")
    before = int((await client.get("/v2/keys")).headers["x-etcd-index"])
    same = (await client.get("/v2/members")).json()["members"][0]["peerURLs"]
    r = await client.put(f"/v2/members/{me}", json={"peerURLs": same})
    assert r.status_code == 204 and r.content == b""
    # etcd rewrites the member's raftAttributes in the v2 store: one store index
    assert int((await client.get("/v2/keys")).headers["x-etcd-index"]) == before + 1
    r = await client.put(f"/v2/members/{me}", json={"peerURLs": ["http://127.0.0.1:29999"]})
    assert r.status_code == 204
    assert (await client.get("/v2/members")).json()["members"][0]["peerURLs"] == ["http://127.0.0.1:29999"]
    bad = await client.put(
        f"/v2/members/{me}", content=b'{"peerURLs":["x"]}', headers={"content-type": "text/plain"}
    )
    assert bad.status_code == 415


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # etcd 3.4.23's answers to the same bodies (recorded by hand against a live etcd)
        ("{}", "no valid URLs given"),
        ('{"peerURLs":null}', "no valid URLs given"),
        (
            "[1]",
            'json: cannot unmarshal array into Go value of type struct { PeerURLs []string "json:\\"peerURLs\\"" }',
        ),
        ('{"peerURLs":[1]}', "json: cannot unmarshal number into Go struct field .peerURLs of type string"),
        ('{"peerURLs":true}', "json: cannot unmarshal bool into Go struct field .peerURLs of type []string"),
        ('{"peerURLs":{}}', "json: cannot unmarshal object into Go struct field .peerURLs of type []string"),
    ],
)
async def test_member_add_body_errors_are_etcds(client: httpx.AsyncClient, body: str, message: str) -> None:
    r = await client.post("/v2/members", content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"message": message})
