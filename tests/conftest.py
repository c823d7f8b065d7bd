"""Shared pytest configuration: ``--seed``, CI detection, reference-etcd fixtures.

Markers (``diff``, ``slow``) are declared in pyproject.toml.  Under ``CI=true`` a missing
reference etcd fails the differential tests instead of skipping them (tests/support/etcd_ref.py).
"""

from __future__ import annotations

import pytest

from tests.support.procs import impl_description, running_in_ci

pytest_plugins = ["tests.support.etcd_ref"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seed",
        action="store",
        type=int,
        default=None,
        help="replay one seed of the randomized tests (every randomized failure prints its seed)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    from tests.support.etcd_ref import probe_etcd  # imported as a plugin first (assert rewriting)

    path, info = probe_etcd()
    etcd = f"{path} ({info})" if path else f"missing: {info}"
    return [
        f"CI={'true' if running_in_ci() else 'false'}; reference etcd: {etcd}",
        f"implementation under test: {impl_description()}",
    ]


@pytest.fixture
def seed_option(request: pytest.FixtureRequest) -> int | None:
    value: int | None = request.config.getoption("seed")
    return value


@pytest.fixture(scope="session")
def in_ci() -> bool:
    return running_in_ci()
