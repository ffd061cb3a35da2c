"""``smartbroker cluster status|forget`` against a real etcd with records written as nodes
write them (no broker needed), and their one-line errors; the cluster settings of
``serve`` (checked before anything starts) and the single node loading nothing of
cluster mode."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from smartbroker.cli.main import app
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.membership import KNOWN, NODES, NodeRecord
from smartbroker.config import Config, ConfigError
from smartbroker.launcher import free_port


def smartbroker(*args: str, env: dict[str, str] | None = None) -> Any:
    """The CLI in this process (typer's runner): ``returncode``, ``stdout``, ``stderr``."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SMARTBROKER_")}
    result = CliRunner().invoke(app, list(args), env={**unset, **(env or {})})
    result.returncode = result.exit_code
    return result


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``smartbroker serve`` as its own process: a bad setting must stop it before it starts."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMARTBROKER_")}
    return subprocess.run([sys.executable, "-m", "smartbroker", "serve", *args],
                          capture_output=True, text=True, timeout=30, env={**clean, **(env or {})})


def record(name: str, port: int) -> bytes:
    return NodeRecord(name=name, host="127.0.0.1", amqp_port=port, kafka_port=0,
                      http_port=port + 1, cluster_port=port + 2, version="0.1.0",
                      started_at=0.0, node_id=f"id-{name}").to_json()


async def write(endpoint: str, cluster: str, items: dict[str, bytes], lease: bool) -> None:
    """``items`` as nodes write them; ``nodes/`` keys on a lease when ``lease``."""
    async with EtcdClient(endpoint, cluster) as etcd:
        lease_id = await etcd.grant_lease(30) if lease else 0
        for key, value in items.items():
            await etcd.put(key, value, lease_id if key.startswith(NODES) else 0)


def test_status_and_forget(etcd: Any, cluster_name: str) -> None:
    base = ("--etcd", etcd.endpoint, "--cluster-name", cluster_name)
    empty = smartbroker("cluster", "status", *base)
    assert empty.returncode == 0 and f"cluster {cluster_name}: no nodes" in empty.stdout

    asyncio.run(write(etcd.endpoint, cluster_name, {
        KNOWN + "a": record("a", 1000), KNOWN + "b": record("b", 2000),
        NODES + "a": record("a", 1000),
        NODES + "z": b"\xff not a record",  # a foreign writer: listed, never a crash
        "placement/%2F/q1": json.dumps({"leader": "a"}).encode(),
        "placement/%2F/q2": json.dumps({"leader": "a"}).encode(),
        "placement/%2F/q3": json.dumps({"leader": "b", "partitions": ["b", "a"]}).encode(),
        "placement/%2F/junk": b"not json"}, lease=True))
    shown = smartbroker("cluster", "status", "--json", *base)
    assert shown.returncode == 0, shown.stderr
    nodes = {n["name"]: n for n in json.loads(shown.stdout)["nodes"]}
    assert nodes["a"]["running"] is True and nodes["a"]["leaders"] == 2
    assert nodes["b"]["running"] is False and nodes["b"]["leaders"] == 1
    assert (nodes["a"]["partition_leaders"], nodes["b"]["partition_leaders"]) == (1, 1)
    assert nodes["b"]["amqp_port"] == 2000 and nodes["b"]["uptime"] == 0
    assert nodes["z"]["running"] is True and "host" not in nodes["z"]
    table = smartbroker("cluster", "status", *base)
    assert "2 of 3 node(s) up" in table.stdout

    up = smartbroker("cluster", "forget", "a", *base)
    assert up.returncode == 1 and up.stderr.startswith("error: node 'a' is running")
    gone = smartbroker("cluster", "forget", "b", *base)
    assert gone.returncode == 0 and "node b forgotten" in gone.stdout
    unknown = smartbroker("cluster", "forget", "b", *base)
    assert unknown.returncode == 1 and "no node 'b'" in unknown.stderr
    by_env = smartbroker("cluster", "status", "--json",
                         env={"SMARTBROKER_ETCD": etcd.endpoint,
                              "SMARTBROKER_CLUSTER_NAME": cluster_name})
    assert [n["name"] for n in json.loads(by_env.stdout)["nodes"]] == ["a", "z"]


@pytest.mark.parametrize("args, message", [
    ((), "error: no etcd endpoints: give --etcd"),
    (("--etcd", "ftp://x"), "error: etcd endpoint 'ftp://x' is not a URL"),
    (("--etcd", "https://x:1"), "only http:// endpoints are supported"),
])
def test_status_refuses_bad_endpoints(args: tuple[str, ...], message: str) -> None:
    done = smartbroker("cluster", "status", *args)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_status_of_an_unreachable_etcd_is_one_line() -> None:
    done = smartbroker("cluster", "status", "--etcd", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1 and done.stderr.startswith("error: no etcd endpoint answered")
    assert len(done.stderr.splitlines()) == 1


def test_cluster_settings() -> None:
    cfg = Config.load(etcd="127.0.0.1, http://h:2380/", node_name="n@host-1",
                      cluster_name="c.1")
    assert cfg.etcd == ["http://127.0.0.1:2379", "http://h:2380"]
    assert (cfg.node_name, cfg.cluster_name, cfg.cluster_port) == ("n@host-1", "c.1", 25672)
    assert Config.load().etcd == []  # no --etcd: a single node
    for bad in ("http://h:99999", "http://h/path", "h:port", "ftp://h"):
        with pytest.raises(ConfigError, match="invalid setting etcd: etcd endpoint"):
            Config.load(etcd=bad)
    for field in ("node_name", "cluster_name"):
        with pytest.raises(ConfigError, match=f"invalid setting {field}"):
            Config.load(**{field: "a/b"})
    with pytest.raises(ConfigError, match="cluster_lease_ttl"):
        Config.load(cluster_lease_ttl=1)


def test_serve_refuses_bad_cluster_settings_in_one_line(tmp_path: Any) -> None:
    done = serve("--data-dir", str(tmp_path), "--etcd", "http://x:1/a")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: invalid setting etcd: etcd endpoint 'http://x:1/a'")
    env = serve("--data-dir", str(tmp_path), env={"SMARTBROKER_NODE_NAME": "a b"})
    assert env.returncode == 1 and "invalid setting node_name" in env.stderr


def test_the_single_node_loads_nothing_of_cluster_mode() -> None:
    probe = ("import sys, smartbroker.cli.main, smartbroker.server.app, "
             "smartbroker.management.app, smartbroker.management.server; "
             "print(sorted(m for m in sys.modules if m.startswith(('smartbroker.cluster', "
             "'aetcd', 'grpc'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
