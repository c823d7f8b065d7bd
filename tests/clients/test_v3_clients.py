"""Real v3 gateway clients used as a new user would: etcd3gw and etcd3-py.

Both speak etcd 3.4's grpc-gateway JSON; they run against a real etcdpy process on loopback.
Installed from PyPI with the dev extra; skipped locally when missing, required under CI=true.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

import pytest

from tests.support.etcd_ref import require_impl
from tests.support.procs import ServerProc, running_in_ci

pytestmark = pytest.mark.slow


def _module(name: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        if running_in_ci():
            pytest.fail(f"{pip_name} is required under CI=true", pytrace=False)
        pytest.skip(f"{pip_name} is not installed")


@pytest.fixture
def server(impl_factory: Any) -> ServerProc:
    require_impl()
    proc: ServerProc = impl_factory()
    return proc


def _host_port(server: ServerProc) -> tuple[str, int]:
    host, port = server.client_url.removeprefix("http://").split(":")
    return host, int(port)


def test_etcd3gw(server: ServerProc) -> None:
    client_mod = _module("etcd3gw.client", "etcd3gw")
    host, port = _host_port(server)
    c = client_mod.Etcd3Client(host=host, port=port, timeout=10)
    assert c.status()["version"] == "3.4.23"
    assert c.put("foo", "bar") is True
    assert c.get("foo") == [b"bar"]
    assert c.create("new", "v") is True
    assert c.create("new", "v") is False  # txn compare on create_revision
    assert c.replace("foo", "bar", "baz") is True
    assert c.replace("foo", "nope", "x") is False
    assert [v for v, _ in c.get_prefix("f")] == [b"baz"]

    lease = c.lease(ttl=30)
    assert 0 < lease.ttl() <= 30
    assert lease.refresh() == 30
    c.put("leased", "v", lease=lease)
    assert lease.keys() == [b"leased"]
    assert lease.revoke() is True
    assert c.get("leased") == []

    events, cancel = c.watch("foo")
    writer = threading.Timer(0.3, lambda: c.put("foo", "qux"))
    writer.start()
    try:
        event = next(iter(events))
    finally:
        writer.join()
        cancel()
    assert event["kv"]["value"] == b"qux"

    assert c.delete("foo") is True
    assert c.delete_prefix("n") is True
    assert [m["name"] for m in c.members()] == [server.name]
    lock = c.lock(id="mylock", ttl=10)
    assert lock.acquire() is True
    assert lock.is_acquired() is True
    assert lock.release() is True


def test_etcd3_py(server: ServerProc) -> None:
    etcd3 = _module("etcd3", "etcd3-py")
    host, port = _host_port(server)
    c = etcd3.Client(host, port)
    assert c.version().etcdserver == "3.4.23"
    assert c.health() == "true" or c.health() is True
    c.put("k3", "v3")
    r = c.range("k3")
    assert r.count == 1 and r.kvs[0].value == b"v3"

    lease = c.Lease(ttl=30)
    lease.grant()
    assert 0 < lease.ttl() <= 30
    c.put("k3", "v4", lease=lease.ID)
    assert c.range("k3").kvs[0].lease == lease.ID
    lease.revoke()
    assert c.range("k3").count == 0  # revoking the lease deleted its key

    seen: list[bytes] = []
    w = c.Watcher(key="wk")
    w.onEvent(lambda e: seen.append(e.value))
    w.runDaemon()
    try:
        time.sleep(0.5)
        c.put("wk", "1")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        w.stop()
    assert seen == [b"1"]

    t = c.Txn()
    t.If(t.key("k3").version == 0).Then(t.put("k3", "created")).Else(t.range("k3"))
    assert t.commit().succeeded is True
    assert c.range("k3").kvs[0].value == b"created"
