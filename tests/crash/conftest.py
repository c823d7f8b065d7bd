"""Fixtures for the crash tests: a per-test tracker of the servers started (stopped by pid)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.helpers import Servers


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    tracker = Servers(tmp_path)
    try:
        yield tracker
    finally:
        tracker.stop_all()


@pytest.fixture
def seed(seed_option: int | None) -> int:
    """The seed of a randomized crash test (``--seed N`` replays one); printed on failure."""
    return 20240611 if seed_option is None else seed_option
