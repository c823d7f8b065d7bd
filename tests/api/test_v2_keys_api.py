"""/v2/keys end to end through ClientApp and a real one-member EtcdServer (ASGITransport)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from app.server import EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def body(r: httpx.Response) -> Any:
    assert r.content.endswith(b"\n"), r.content
    return orjson.loads(r.content)


def etcd_index(r: httpx.Response) -> int:
    return int(r.headers["x-etcd-index"])


def assert_success_headers(r: httpx.Response, srv: EtcdServer) -> None:
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-etcd-cluster-id"] == format(srv.cluster_id, "x")
    assert int(r.headers["x-raft-index"]) > 0
    assert int(r.headers["x-raft-term"]) >= 1
    assert r.headers["content-length"] == str(len(r.content))


def assert_error(r: httpx.Response, status: int, code: int, cause: str | None, index: int) -> None:
    assert r.status_code == status
    expected: dict[str, Any] = {"errorCode": code, "message": r.json()["message"]}
    if cause is not None:
        expected["cause"] = cause
    expected["index"] = index
    assert r.content == orjson.dumps(expected) + b"\n"
    assert r.headers["x-etcd-index"] == str(index)
    assert r.headers["content-type"] == "application/json"
    assert "x-etcd-cluster-id" in r.headers
    assert "x-raft-index" not in r.headers and "x-raft-term" not in r.headers


async def test_fresh_member_root_listing_at_store_index_3(
    client: httpx.AsyncClient, server: EtcdServer
) -> None:
    for path in ("/v2/keys", "/v2/keys/"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.content == b'{"action":"get","node":{"dir":true}}\n'
        assert etcd_index(r) == 3
        assert_success_headers(r, server)


async def test_set_create_update_cas_delete_cad_end_to_end(
    client: httpx.AsyncClient, server: EtcdServer
) -> None:
    r = await client.put("/v2/keys/a", data={"value": "1"}, headers=FORM)
    assert r.status_code == 201
    assert (
        r.content == b'{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}}\n'
    )
    assert etcd_index(r) == 4
    assert_success_headers(r, server)
    raft1 = int(r.headers["x-raft-index"])

    r = await client.put("/v2/keys/a?value=2")
    assert r.status_code == 200
    assert body(r)["prevNode"] == {"key": "/a", "value": "1", "modifiedIndex": 4, "createdIndex": 4}
    assert int(r.headers["x-raft-index"]) > raft1

    r = await client.put("/v2/keys/b?value=x&prevExist=false")
    assert (r.status_code, body(r)["action"]) == (201, "create")
    r = await client.put("/v2/keys/b?value=x&prevExist=false")
    assert_error(r, 412, 105, "/b", 6)

    r = await client.put("/v2/keys/b?value=y&prevExist=true")
    assert r.status_code == 200
    assert body(r)["node"] == {"key": "/b", "value": "y", "modifiedIndex": 7, "createdIndex": 6}
    r = await client.put("/v2/keys/nope?value=y&prevExist=true")
    assert_error(r, 404, 100, "/nope", 7)

    r = await client.put("/v2/keys/b?value=z&prevValue=y")
    assert (r.status_code, body(r)["action"]) == (200, "compareAndSwap")
    r = await client.put("/v2/keys/b?value=z&prevValue=q&prevIndex=3")
    assert_error(r, 412, 101, "[q != z] [3 != 8]", 8)

    r = await client.delete("/v2/keys/b?prevValue=z")
    assert r.status_code == 200
    assert r.content == (
        b'{"action":"compareAndDelete","node":{"key":"/b","modifiedIndex":9,"createdIndex":6},'
        b'"prevNode":{"key":"/b","value":"z","modifiedIndex":8,"createdIndex":6}}\n'
    )
    r = await client.delete("/v2/keys/a")
    assert r.status_code == 200
    assert body(r)["node"] == {"key": "/a", "modifiedIndex": 10, "createdIndex": 5}
    r = await client.get("/v2/keys/a")
    assert_error(r, 404, 100, "/a", 10)


async def test_directories(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/d?dir=true")
    assert r.status_code == 201
    assert (
        r.content == b'{"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":4,"createdIndex":4}}\n'
    )
    r = await client.put("/v2/keys/d?value=x")
    assert_error(r, 403, 102, "/d", 4)
    await client.put("/v2/keys/d/f?value=1")
    r = await client.delete("/v2/keys/d")
    assert_error(r, 403, 102, "/d", 5)
    r = await client.delete("/v2/keys/d?dir=true")
    assert_error(r, 403, 108, "/d", 5)
    r = await client.get("/v2/keys/d/f/x")
    assert_error(r, 400, 104, "/d/f", 5)
    r = await client.get("/v2/keys/d?recursive=true&sorted=true")
    assert body(r)["node"]["nodes"] == [{"key": "/d/f", "value": "1", "modifiedIndex": 5, "createdIndex": 5}]
    r = await client.delete("/v2/keys/d?recursive=true")
    assert r.status_code == 200 and body(r)["node"]["dir"] is True


async def test_root_is_read_only_and_cad_on_root_has_no_cause(client: httpx.AsyncClient) -> None:
    for req in (client.put("/v2/keys/?value=x"), client.delete("/v2/keys/?recursive=true")):
        assert_error(await req, 400, 107, "/", 3)
    r = await client.delete("/v2/keys/?prevValue=a")
    assert_error(r, 403, 102, None, 3)


async def test_post_creates_in_order_keys(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/keys/queue", data={"value": "job"}, headers=FORM)
    assert r.status_code == 201
    assert body(r)["node"]["key"] == "/queue/00000000000000000004"
    r = await client.post("/v2/keys/?value=top")
    assert body(r)["node"]["key"] == "/00000000000000000005"
    r = await client.post("/v2/keys/00000000000000000005?value=x")
    assert_error(r, 400, 104, "/00000000000000000005", 5)


async def test_request_validation_errors_have_index_zero(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/a?ttl=abc")
    assert_error(r, 400, 202, 'invalid value for "ttl"', 0)
    r = await client.put("/v2/keys/a?wait=true")
    assert_error(r, 400, 209, '"wait" can only be used with GET requests', 0)
    r = await client.put("/v2/keys/a?value=%zz")
    assert_error(r, 400, 210, 'invalid URL escape "%zz"', 0)


async def test_form_body_wins_over_query_and_json_bodies_are_ignored(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/f?value=q", content=b"value=b", headers=FORM)
    assert body(r)["node"]["value"] == "b"
    r = await client.put("/v2/keys/f", content=b'{"value":"j"}', headers={"Content-Type": "application/json"})
    assert body(r)["node"]["value"] == ""
    r = await client.request("DELETE", "/v2/keys/f", content=b"prevValue=zz", headers=FORM)
    assert (r.status_code, body(r)["action"]) == (200, "delete")


async def test_no_value_on_success(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/nv/a?noValueOnSuccess=true&value=1")
    assert (r.status_code, r.content) == (201, b'{"action":"set"}\n')
    r = await client.put("/v2/keys/nv/a?noValueOnSuccess=true&prevValue=1&value=2")
    assert r.content == b'{"action":"compareAndSwap"}\n'
    r = await client.put("/v2/keys/nv/a?noValueOnSuccess=true&prevExist=true&value=3")
    assert r.content == b'{"action":"update"}\n'
    r = await client.post("/v2/keys/nv/q?noValueOnSuccess=true&value=1")
    assert r.content == b'{"action":"create"}\n'
    r = await client.delete("/v2/keys/nv/a?noValueOnSuccess=true")
    assert body(r)["action"] == "delete" and "prevNode" in body(r)
    r = await client.get("/v2/keys/nv/q?noValueOnSuccess=true")
    assert "node" in body(r)


async def test_head_has_get_headers_and_no_body(client: httpx.AsyncClient) -> None:
    await client.put("/v2/keys/head/a?value=1")
    g = await client.get("/v2/keys/head/a")
    h = await client.head("/v2/keys/head/a")
    assert h.status_code == 200 and h.content == b""
    for name in ("content-type", "content-length", "x-etcd-index", "x-etcd-cluster-id", "x-raft-term"):
        assert h.headers[name] == g.headers[name]
    h = await client.head("/v2/keys/head/missing")
    g = await client.get("/v2/keys/head/missing")
    assert (h.status_code, h.content) == (404, b"")
    assert h.headers["content-length"] == str(len(g.content))
    h = await client.head("/v2/keys/head/a?wait=true")
    assert h.status_code == 400 and h.headers["x-etcd-index"] == "0"
    assert h.headers["content-length"] == "108"


async def test_quorum_get_goes_through_raft_and_ignores_wait(client: httpx.AsyncClient) -> None:
    await client.put("/v2/keys/q?value=1")
    r1 = await client.get("/v2/keys/q")
    r2 = await client.get("/v2/keys/q?quorum=true&wait=true")
    assert r2.status_code == 200 and body(r2)["node"]["value"] == "1"
    assert int(r2.headers["x-raft-index"]) > int(r1.headers["x-raft-index"])
    assert etcd_index(r2) == etcd_index(r1) == 4
    r = await client.get("/v2/keys/missing?quorum=true")
    assert_error(r, 404, 100, "/missing", 4)


async def test_bodies_above_2048_bytes_are_chunked(client: httpx.AsyncClient) -> None:
    small = "x" * 1900  # event body 1993 bytes as in etcd's transcript
    r = await client.put("/v2/keys/large/a", data={"value": small}, headers=FORM)
    assert len(r.content) <= 2048 and r.headers["content-length"] == str(len(r.content))
    r = await client.put("/v2/keys/large/a", data={"value": small}, headers=FORM)  # + prevNode
    assert len(r.content) > 2048 and "content-length" not in r.headers
    r = await client.get("/v2/keys/large/a")
    assert "content-length" in r.headers
    r = await client.get("/v2/keys/large?recursive=true")
    assert ("content-length" in r.headers) == (len(r.content) <= 2048)


async def test_history_watch_is_answered_at_once(client: httpx.AsyncClient) -> None:
    await client.put("/v2/keys/w?value=1")
    await client.put("/v2/keys/w?value=2")
    r = await client.get("/v2/keys/w?wait=true&waitIndex=4")
    assert r.status_code == 200
    assert body(r)["node"] == {"key": "/w", "value": "1", "modifiedIndex": 4, "createdIndex": 4}
    assert etcd_index(r) == 5  # the index at registration, not the event's
    assert "x-raft-index" in r.headers and "content-length" not in r.headers


async def test_ttl_key_shows_ttl_and_expires_through_the_sync_loop(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/t?value=x&ttl=1")
    n = body(r)["node"]
    assert n["ttl"] == 1 and n["expiration"].endswith("Z")
    r = await client.put("/v2/keys/z?ttl=0")
    assert "expiration" in body(r)["node"] and "ttl" not in body(r)["node"]
    r = await client.put("/v2/keys/p?ttl=99999999999")
    assert "expiration" not in body(r)["node"]
    for _ in range(60):
        r = await client.get("/v2/keys/t")
        if r.status_code == 404:
            break
        await asyncio.sleep(0.1)
    assert r.status_code == 404 and body(r)["errorCode"] == 100
    assert (await client.get("/v2/keys/p")).status_code == 200


async def test_refresh_keeps_the_value(client: httpx.AsyncClient) -> None:
    await client.put("/v2/keys/r?value=keep&ttl=100")
    r = await client.put("/v2/keys/r?refresh=true&ttl=200&prevExist=true")
    n = body(r)["node"]
    assert (r.status_code, body(r)["action"], n["value"], n["ttl"]) == (200, "update", "keep", 200)
    assert "refresh" not in body(r)
    r = await client.put("/v2/keys/missing?refresh=true&ttl=5")
    assert_error(r, 404, 100, "/missing", 5)


async def test_key_names_with_escapes(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/a%20b?value=1")
    assert body(r)["node"]["key"] == "/a b"
    r = await client.put("/v2/keys/p%2Fq?value=1")
    assert body(r)["node"]["key"] == "/p/q"
    r = await client.put("/v2/keys/x+y/?value=a+b")
    assert body(r)["node"] == {"key": "/x+y", "value": "a b", "modifiedIndex": 6, "createdIndex": 6}


async def test_invalid_utf8_byte_renders_as_escaped_replacement(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/u?value=x%ffy")
    assert b'"value":"x\\ufffdy"' in r.content


async def test_truncated_utf8_sequence_renders_one_replacement_per_byte(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/u?value=%e2%82x%ff")
    assert b'"value":"\\ufffd\\ufffdx\\ufffd"' in r.content


async def test_valid_replacement_character_is_written_raw(client: httpx.AsyncClient) -> None:
    r = await client.put("/v2/keys/u?value=%ef%bf%bd")
    assert b'"value":"\xef\xbf\xbd"' in r.content


async def test_keys_method_not_allowed(client: httpx.AsyncClient) -> None:
    r = await client.request("PATCH", "/v2/keys/a")
    assert r.status_code == 405
    assert r.headers["allow"] == "HEAD,GET,PUT,POST,DELETE"
    assert r.content == b"Method Not Allowed\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "x-etcd-index" not in r.headers and "x-etcd-cluster-id" not in r.headers


async def test_repeated_recursive_listing_follows_every_write(client: httpx.AsyncClient) -> None:
    # recursive listings are answered from a cache between writes: each write must show at once
    for i in range(3):
        assert (await client.put(f"/v2/keys/cache/k{i}?value={i}")).status_code == 201
    first = await client.get("/v2/keys/cache?recursive=true&sorted=true")
    again = await client.get("/v2/keys/cache?recursive=true&sorted=true")
    assert first.content == again.content and first.headers["x-etcd-index"] == again.headers["x-etcd-index"]
    await client.put("/v2/keys/cache/k1?value=changed")
    await client.put("/v2/keys/elsewhere?value=x")  # another part of the tree moves the index too
    after = await client.get("/v2/keys/cache?recursive=true&sorted=true")
    values = [n["value"] for n in after.json()["node"]["nodes"]]
    assert values == ["0", "changed", "2"]
    assert int(after.headers["x-etcd-index"]) == int(first.headers["x-etcd-index"]) + 2
    stats = (await client.get("/v2/stats/store")).json()
    assert stats["getsSuccess"] >= 3  # cached answers count as reads, as etcd counts them


async def test_recursive_listing_with_ttl_shows_the_ttl_counting_down(client: httpx.AsyncClient) -> None:
    await client.put("/v2/keys/ttldir/k?value=v&ttl=100")
    first = (await client.get("/v2/keys/ttldir?recursive=true")).json()["node"]["nodes"][0]
    await asyncio.sleep(1.1)
    later = (await client.get("/v2/keys/ttldir?recursive=true")).json()["node"]["nodes"][0]
    assert later["ttl"] < first["ttl"]  # not a cached rendering
