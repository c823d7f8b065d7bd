"""The reference etcd (3.4 or 3.5, the last releases with the v2 API) and fixtures that start it.

Discovery: ``ETCD_BIN`` or ``etcd`` on ``PATH``; ``etcd --version`` must say 3.4.x or 3.5.x.
When it is missing or unusable, tests that need it skip locally with a clear message, but
under ``CI=true`` they fail: the differential suite must never silently disappear in CI.

Registered as a pytest plugin by ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.procs import (
    REPO_ROOT,
    ServerProc,
    impl_command,
    running_in_ci,
    start_server,
)

SUPPORTED = ("3.4", "3.5")


@functools.cache
def probe_etcd() -> tuple[str | None, str]:
    """(path, version) of a usable etcd, or (None, reason it is unusable)."""
    env_bin = os.environ.get("ETCD_BIN", "").strip()
    path = env_bin or shutil.which("etcd")
    where = f"ETCD_BIN={env_bin}" if env_bin else "etcd on PATH"
    if not path:
        return (
            None,
            "etcd not found (set ETCD_BIN or put etcd 3.4/3.5 on PATH; `apt-get install etcd-server`)",
        )
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{where} ({path}) could not be run: {e}"
    m = re.search(r"etcd Version:\s*(\d+\.\d+\.\d+)", out)
    if not m:
        return None, f"{where} ({path}): cannot parse `etcd --version` output: {out[:200]!r}"
    version = m.group(1)
    if not version.startswith(tuple(v + "." for v in SUPPORTED)):
        return None, f"{where} ({path}) is etcd {version}; the v2 oracle must be 3.4.x or 3.5.x"
    return path, version


def etcd_missing(reason: str) -> None:
    """Skip locally, fail under CI=true."""
    msg = f"reference etcd unavailable: {reason}"
    if running_in_ci():
        pytest.fail(msg + " -- under CI=true this is a failure, not a skip", pytrace=False)
    pytest.skip(msg)


def require_etcd() -> str:
    path, info = probe_etcd()
    if path is None:
        etcd_missing(info)
        raise AssertionError("unreachable")
    return path


def require_impl() -> list[str]:
    """Command of the implementation under test; skip locally (fail in CI) if it has no entry point."""
    cmd = impl_command()
    if not os.environ.get("ETCDPY_CMD") and not (REPO_ROOT / "app" / "__main__.py").exists():
        msg = "etcdpy has no entry point yet (app/__main__.py missing); set ETCDPY_CMD to test another binary"
        if running_in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return cmd


ServerFactory = Callable[..., ServerProc]


def _factory(cmd_getter: Callable[[], list[str]], workdir: Path) -> Iterator[ServerFactory]:
    started: list[ServerProc] = []

    def make(*, name: str = "spec", cors: str | None = "*", extra: tuple[str, ...] = ()) -> ServerProc:
        proc = start_server(cmd_getter(), workdir, name=name, cors=cors, extra=extra)
        started.append(proc)
        return proc

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for p in started:
            try:
                p.stop()
                p.remove_data()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start fresh reference etcd servers (stopped at teardown): ``etcd_factory(cors=..., extra=...)``."""
    path = require_etcd()
    yield from _factory(lambda: [path], tmp_path / "etcd")


@pytest.fixture
def impl_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start fresh implementation-under-test servers (``ETCDPY_CMD`` or ``python -m app``)."""
    cmd = require_impl()
    yield from _factory(lambda: cmd, tmp_path / "impl")


@pytest.fixture
def etcd_server(etcd_factory: ServerFactory) -> ServerProc:
    """A fresh single-member reference etcd: ``--enable-v2=true --cors '*'`` on loopback ports."""
    return etcd_factory()


@pytest.fixture
def impl_server(impl_factory: ServerFactory) -> ServerProc:
    """A fresh single-member implementation under test, same flags as ``etcd_server``."""
    return impl_factory()
