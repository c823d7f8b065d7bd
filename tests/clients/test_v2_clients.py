"""Real v2 clients used as a new user would: python-etcd and etcdctl (ETCDCTL_API=2).

These run against a real etcdpy process on loopback. etcdctl comes with Debian's
etcd-client package (installed by bin/test next to etcd-server); python-etcd from PyPI (dev
extra). Each is skipped locally when missing and required under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.support.etcd_ref import require_impl
from tests.support.procs import ServerProc, running_in_ci

pytestmark = pytest.mark.slow


def _need(ok: bool, what: str) -> None:
    if not ok:
        if running_in_ci():
            pytest.fail(f"{what} is required under CI=true", pytrace=False)
        pytest.skip(f"{what} is not installed")


@pytest.fixture
def server(impl_factory: Any) -> ServerProc:
    require_impl()
    proc: ServerProc = impl_factory()
    return proc


def test_python_etcd_client(server: ServerProc) -> None:
    try:
        import etcd  # type: ignore[import-untyped]
    except ImportError:
        _need(False, "python-etcd")
        return
    host, port = server.client_url.removeprefix("http://").split(":")
    c = etcd.Client(host=host, port=int(port), read_timeout=10)
    assert c.version == "3.4.23"
    c.write("/pe/a", "v1")
    assert c.read("/pe/a").value == "v1"
    queued = c.write("/pe/q", "job", append=True)
    assert queued.key.startswith("/pe/q/") and len(queued.key.rsplit("/", 1)[1]) == 20
    c.write("/pe/t", "x", ttl=30)
    assert 0 < c.read("/pe/t").ttl <= 30
    with pytest.raises(etcd.EtcdCompareFailed):
        c.test_and_set("/pe/a", "v2", "nope")
    c.test_and_set("/pe/a", "v2", "v1")
    assert c.get("/pe/a").value == "v2"
    listing = c.read("/pe", recursive=True, sorted=True)
    assert [x.key for x in listing.children] == ["/pe/a", queued.key, "/pe/t"]
    with pytest.raises(etcd.EtcdKeyNotFound):
        c.read("/pe/missing")
    with pytest.raises(etcd.EtcdAlreadyExist):
        c.write("/pe/a", "x", prevExist=False)

    writer = threading.Timer(0.3, lambda: c.write("/pe/a", "v3"))
    writer.start()
    try:
        assert c.watch("/pe/a", timeout=10).value == "v3"
    finally:
        writer.join()
    index = c.read("/pe/a").modifiedIndex
    assert c.watch("/pe/a", index=index, timeout=5).value == "v3"  # answered from history

    assert c.machines == [server.client_url]
    assert c.leader["clientURLs"] == [server.client_url]
    lock = etcd.Lock(c, "l1")
    lock.acquire(blocking=True, lock_ttl=10, timeout=10)
    assert lock.is_acquired
    lock.release()
    c.delete("/pe", recursive=True)
    with pytest.raises(etcd.EtcdKeyNotFound):
        c.read("/pe")


def _etcdctl(server: ServerProc, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "2"}
    return subprocess.run(
        ["etcdctl", "--endpoints", server.client_url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=check,
    )


def test_etcdctl_v2(server: ServerProc) -> None:
    _need(shutil.which("etcdctl") is not None, "etcdctl (apt: etcd-client)")
    assert _etcdctl(server, "set", "/foo", "bar").stdout == "bar\n"
    assert _etcdctl(server, "get", "/foo").stdout == "bar\n"
    _etcdctl(server, "mkdir", "/d")
    _etcdctl(server, "set", "/d/a", "1")
    assert _etcdctl(server, "ls", "--recursive", "--sort", "/").stdout.split() == ["/d", "/d/a", "/foo"]
    assert _etcdctl(server, "update", "/foo", "baz").stdout == "baz\n"
    assert _etcdctl(server, "set", "/foo", "qux", "--swap-with-value", "baz").stdout == "qux\n"
    failed = _etcdctl(server, "set", "/foo", "x", "--swap-with-value", "nope", check=False)
    assert failed.returncode != 0 and "Compare failed" in failed.stderr
    assert _etcdctl(server, "mk", "/q", "x", "--ttl", "30").stdout == "x\n"
    not_empty = _etcdctl(server, "rmdir", "/d", check=False)
    assert not_empty.returncode != 0 and "Directory not empty" in not_empty.stderr
    _etcdctl(server, "rm", "--recursive", "/d")
    _etcdctl(server, "rm", "/foo")
    missing = _etcdctl(server, "get", "/foo", check=False)
    assert missing.returncode == 4 and "Key not found" in missing.stderr
    health = _etcdctl(server, "cluster-health").stdout
    assert "cluster is healthy" in health
    assert "isLeader=true" in _etcdctl(server, "member", "list").stdout

    env = {**os.environ, "ETCDCTL_API": "2"}
    watcher = subprocess.Popen(
        ["etcdctl", "--endpoints", server.client_url, "watch", "/w"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        _etcdctl(server, "set", "/w", "hello")
        out, _ = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert out == "hello\n"
