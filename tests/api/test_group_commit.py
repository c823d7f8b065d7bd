"""Group commit: writes that arrive while an fsync runs share the next one, and every write is
acknowledged only after an fsync that covered it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.server import EtcdServer
from tests.api.conftest import asgi_client, make_app, running_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_concurrent_writes_share_fsyncs_and_wait_for_them(tmp_path: Path) -> None:
    # real fsyncs (the API tests' default server skips them): the helper process runs them
    async with running_server(tmp_path / "data", unsafe_no_fsync=False) as server:
        async with asgi_client(make_app(server)) as client:
            await _share_and_wait(server, client)


async def _share_and_wait(server: EtcdServer, client: httpx.AsyncClient) -> None:
    wal = server.node._wal
    assert wal is not None
    helper = server.node._sync_helper
    real_sync, real_synced, real_helper_sync = wal.sync, wal.synced, helper.sync
    syncs: list[float] = []  # when an fsync (on the loop, or the helper's) was known done
    lock = threading.Lock()

    def slow_sync() -> None:
        time.sleep(0.02)  # a slow disk: plenty of writes arrive during each fsync
        real_sync()
        with lock:
            syncs.append(time.monotonic())

    def slow_helper_sync(fd: int, generation: int) -> asyncio.Future[float]:
        done = real_helper_sync(fd, generation)
        later: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: asyncio.get_running_loop().call_later(0.02, later.set_result, 0.02))
        return later

    def traced_synced(error: OSError | None) -> None:
        real_synced(error)
        syncs.append(time.monotonic())

    wal.sync, wal.synced = slow_sync, traced_synced  # type: ignore[method-assign]
    helper.sync = slow_helper_sync  # type: ignore[method-assign]
    try:
        acked: list[float] = []

        async def put(i: int) -> None:
            r = await client.put(f"/v2/keys/gc/{i}", data={"value": str(i)})
            assert r.status_code == 201
            acked.append(time.monotonic())

        await asyncio.gather(*(put(i) for i in range(100)))
    finally:
        wal.sync, wal.synced = real_sync, real_synced  # type: ignore[method-assign]
        helper.sync = real_helper_sync  # type: ignore[method-assign]
    # 100 writes, far fewer fsyncs: they were grouped
    assert 1 <= len(syncs) < 50, len(syncs)
    # and no write was acknowledged before the first fsync finished
    assert min(acked) >= min(syncs)
    listing = (await client.get("/v2/keys/gc", params={"recursive": "true"})).json()
    assert len(listing["node"]["nodes"]) == 100
    assert server.node._sync_helper.helper_pid is not None
