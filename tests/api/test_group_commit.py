"""Group commit: writes that arrive while an fsync runs share the next one, and every write is
acknowledged only after an fsync that covered it."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from app.server import EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_concurrent_writes_share_fsyncs_and_wait_for_them(
    server: EtcdServer, client: httpx.AsyncClient
) -> None:
    wal = server.node._wal
    assert wal is not None
    real_sync = wal.sync
    syncs: list[float] = []
    lock = threading.Lock()

    def slow_sync() -> None:
        time.sleep(0.02)  # a slow disk: plenty of writes arrive during each fsync
        real_sync()
        with lock:
            syncs.append(time.monotonic())

    wal.sync = slow_sync  # type: ignore[method-assign]
    try:
        acked: list[float] = []

        async def put(i: int) -> None:
            r = await client.put(f"/v2/keys/gc/{i}", data={"value": str(i)})
            assert r.status_code == 201
            acked.append(time.monotonic())

        await asyncio.gather(*(put(i) for i in range(100)))
    finally:
        wal.sync = real_sync  # type: ignore[method-assign]
    # 100 writes, far fewer fsyncs: they were grouped
    assert 1 <= len(syncs) < 50, len(syncs)
    # and no write was acknowledged before the first fsync finished
    assert min(acked) >= min(syncs)
    listing = (await client.get("/v2/keys/gc", params={"recursive": "true"})).json()
    assert len(listing["node"]["nodes"]) == 100
