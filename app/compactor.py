"""Automatic v3 compaction: etcd's periodic and revision compactors (etcdserver/api/v3compactor).

Invariant: only the leader compacts, and only through the log (the same V3Compact a client
would send), so every member compacts at the same index. The decision logic is in `tick()`,
driven by an injected clock, so it is tested without waiting; `run()` is the thin loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("etcdpy.compactor")

HOUR_NS = 3_600_000_000_000
REVISION_CHECK_INTERVAL_NS = 5 * 60 * 1_000_000_000  # etcd revInterval
RETRY_DIVISOR = 10  # etcd: the periodic compactor samples the revision every period/10 (max 1h/10)


@dataclass
class Compactor:
    """`mode` is "periodic" (retention in ns) or "revision" (retention in revisions)."""

    mode: str
    retention: int
    current_revision: Callable[[], int]
    compact: Callable[[int], Awaitable[bool]]  # True on success or "already compacted"
    is_leader: Callable[[], bool]
    now_ns: Callable[[], int] = time.monotonic_ns
    _revs: list[int] = field(default_factory=list)
    _last_success_ns: int | None = None
    _base_interval_ns: int = 0
    _prev: int = 0

    @property
    def interval_ns(self) -> int:
        """How often tick() should run."""
        if self.mode == "revision":
            return REVISION_CHECK_INTERVAL_NS
        return min(self.retention, HOUR_NS) // RETRY_DIVISOR

    async def tick(self) -> int | None:
        """One step of etcd's loop; returns the revision compacted to, if any."""
        if self.retention <= 0 or not self.is_leader():
            # etcd pauses its compactor on followers and resumes from scratch on leadership
            self._revs.clear()
            self._last_success_ns = None
            return None
        if self.mode == "revision":
            rev = self.current_revision() - self.retention
            if rev <= 0 or rev == self._prev:
                return None
            if await self.compact(rev):
                self._prev = rev
                return rev
            return None
        return await self._tick_periodic()

    async def _tick_periodic(self) -> int | None:
        # etcd's loop: sample the revision, wait one interval, then (once a period has passed
        # since the last success) compact to the oldest sample, one retention period back.
        now = self.now_ns()
        compacted: int | None = None
        if self._last_success_ns is None:
            self._last_success_ns = now
            self._base_interval_ns = self.retention
        elif now - self._last_success_ns >= self._base_interval_ns and self._revs:
            # after the first full period, compact every min(retention, 1h)
            self._base_interval_ns = min(self.retention, HOUR_NS)
            rev = self._revs[0]
            if await self.compact(rev):
                self._last_success_ns = now
                compacted = rev
        self._revs.append(self.current_revision())
        keep = self.retention // self.interval_ns + 1
        if len(self._revs) > keep:
            self._revs = self._revs[-keep:]
        return compacted

    async def run(self) -> None:
        if self.retention <= 0:
            return
        log.info("auto compaction: mode=%s retention=%d", self.mode, self.retention)
        while True:
            try:
                rev = await self.tick()
            except Exception:  # a failed compaction is retried at the next tick, as in etcd
                log.exception("auto compaction failed")
                continue
            if rev is not None:
                log.info("auto compaction: compacted to revision %d", rev)
            await asyncio.sleep(self.interval_ns / 1e9)
