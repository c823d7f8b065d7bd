"""Fixtures for the cluster tests: 3-member clusters of real processes, stopped by pid."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import Cluster
from tests.support.etcd_ref import require_etcd, require_impl


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """make_cluster(etcd=False) → a created (not yet started) 3-member cluster."""
    made: list[Cluster] = []

    def make(*, etcd: bool = False) -> Cluster:
        cmd = [require_etcd()] if etcd else require_impl()
        c = Cluster(cmd, tmp_path / f"{'etcd' if etcd else 'impl'}-{len(made)}")
        made.append(c)
        c.create()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop_all()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A started etcdpy 3-member cluster."""
    c = make_cluster()
    c.start()
    return c
