"""docker-compose.yml parses, and every member's command is a valid etcd command line for our
own flag parser, describing one consistent 3-member cluster (Docker does not run here, so this
is what we can check; bin/cluster runs the same cluster as local processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import parse

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


def test_compose_members_form_one_cluster() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert sorted(services) == ["etcd1", "etcd2", "etcd3"]
    configs = {name: parse(svc["command"], {}) for name, svc in services.items()}
    clusters = {cfg.initial_cluster for cfg in configs.values()}
    assert len(clusters) == 1, "every member must be given the same --initial-cluster"
    (cluster,) = clusters
    assert sorted(name for name, _ in cluster) == sorted(services)
    for name, cfg in configs.items():
        assert cfg.name == name
        assert cfg.initial_cluster_state == "new"
        assert cfg.initial_cluster_token == "etcdpy-compose"
        assert set(cfg.initial_advertise_peer_urls) == {u for n, u in cluster if n == name}
        assert cfg.data_dir.startswith("/var/lib/etcd/")
        volume = services[name]["volumes"][0].split(":")
        assert volume[0] in doc["volumes"] and cfg.data_dir.startswith(volume[1])
    published = [svc["ports"][0].split(":")[0] for svc in services.values()]
    assert len(set(published)) == 3


def test_dockerfile_installs_the_packages_and_runs_etcdpy() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("app", "raft", "store", "v2api", "v3gateway"):
        assert f"COPY {package} ./{package}" in text
    assert 'ENTRYPOINT ["etcdpy"]' in text
