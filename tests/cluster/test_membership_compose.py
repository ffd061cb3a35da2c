"""docker-compose.yml's ``cluster`` profile (no Docker here: the file, read as Compose
reads it): three nodes of one etcd, each with a name, data volume and host ports of its
own, and settings that ``serve`` accepts; the default service stays out of the profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from smartbroker.config import Config

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _flags(command: list[str]) -> dict[str, str]:
    """``--name value`` pairs of ``serve``'s command line, as Config fields."""
    assert command[0] == "serve"
    args = command[1:]
    return {args[i].removeprefix("--").replace("-", "_"): args[i + 1]
            for i in range(0, len(args), 2)}


def test_three_nodes_on_one_etcd(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert "profiles" not in services["smartbroker"]  # `docker compose up` unchanged
    assert services["etcd"]["profiles"] == ["cluster"]
    names, volumes, host_ports = set(), set(), []
    for node in NODES:
        svc = services[node]
        assert svc["profiles"] == ["cluster"]
        assert svc["depends_on"]["etcd"]["condition"] == "service_healthy"
        for key, value in svc["environment"].items():
            monkeypatch.setenv(key, value)
        cfg = Config.load(**_flags(svc["command"]))  # what serve would accept
        assert cfg.etcd == ["http://etcd:2379"] and cfg.advertise_host == node
        assert cfg.kafka_port == int(svc["ports"][2].split(":")[0])
        names.add(cfg.node_name)
        volumes.add(svc["volumes"][0].split(":")[0])
        host_ports += [p.split(":")[0] for p in svc["ports"]]
    assert len(names) == 3 and len(volumes) == 3
    assert len(set(host_ports)) == len(host_ports) == 9
