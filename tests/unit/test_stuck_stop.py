"""app.server._log_stuck_stop: a stop that hangs says where every task and thread waits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app import server


def test_a_stuck_stop_logs_every_task_and_thread(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    async def waits_forever_on_purpose() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(waits_forever_on_purpose())
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="etcdpy"):
            server._log_stuck_stop()
        task.cancel()

    asyncio.run(main())
    text = caplog.text
    assert "still stopping after" in text and "waits_forever_on_purpose" in text
    assert "Current thread" in capfd.readouterr().err  # faulthandler's dump of the threads
