"""The automatic compactors' decisions, driven by a fake clock (no waiting)."""

from __future__ import annotations

import asyncio

from app.compactor import HOUR_NS, Compactor

MIN_NS = 60 * 1_000_000_000


class Fake:
    def __init__(self) -> None:
        self.rev = 1
        self.now = 0
        self.leader = True
        self.compacted: list[int] = []

    async def compact(self, rev: int) -> bool:
        self.compacted.append(rev)
        return True


def make(fake: Fake, mode: str, retention: int) -> Compactor:
    return Compactor(
        mode=mode,
        retention=retention,
        current_revision=lambda: fake.rev,
        compact=fake.compact,
        is_leader=lambda: fake.leader,
        now_ns=lambda: fake.now,
    )


def run_ticks(c: Compactor, fake: Fake, n: int, revs_per_tick: int) -> None:
    for _ in range(n):
        fake.now += c.interval_ns
        fake.rev += revs_per_tick
        asyncio.run(c.tick())


def test_revision_mode_keeps_the_last_retention_revisions() -> None:
    fake = Fake()
    c = make(fake, "revision", 100)
    fake.rev = 50
    assert asyncio.run(c.tick()) is None  # nothing old enough yet
    fake.rev = 1000
    assert asyncio.run(c.tick()) == 900
    assert asyncio.run(c.tick()) is None  # same target: not compacted twice
    fake.rev = 1010
    assert asyncio.run(c.tick()) == 910
    assert fake.compacted == [900, 910]


def test_periodic_mode_compacts_to_the_revision_of_one_period_ago() -> None:
    fake = Fake()
    c = make(fake, "periodic", 10 * MIN_NS)  # samples every minute
    assert c.interval_ns == MIN_NS
    run_ticks(c, fake, 10, revs_per_tick=10)
    assert fake.compacted == []  # the first full period has not passed
    run_ticks(c, fake, 1, revs_per_tick=10)
    assert len(fake.compacted) == 1
    # the compacted revision was current one retention period (10 samples) earlier
    assert fake.rev - fake.compacted[0] == 100
    run_ticks(c, fake, 9, revs_per_tick=10)
    assert len(fake.compacted) == 1  # next one a full period after the last success
    run_ticks(c, fake, 1, revs_per_tick=10)
    # etcd keeps period/interval + 1 samples, so in steady state the target is one sample older
    assert len(fake.compacted) == 2 and fake.rev - fake.compacted[1] == 110


def test_periodic_mode_interval_is_capped_at_an_hour() -> None:
    fake = Fake()
    c = make(fake, "periodic", 5 * HOUR_NS)
    assert c.interval_ns == HOUR_NS // 10


def test_followers_do_not_compact_and_restart_from_scratch() -> None:
    fake = Fake()
    fake.leader = False
    c = make(fake, "revision", 10)
    fake.rev = 100
    assert asyncio.run(c.tick()) is None
    fake.leader = True
    assert asyncio.run(c.tick()) == 90


def test_zero_retention_disables_compaction() -> None:
    fake = Fake()
    c = make(fake, "periodic", 0)
    fake.rev = 10_000
    assert asyncio.run(c.tick()) is None
    assert fake.compacted == []
