"""What ``smartbroker cluster forget NODE`` deletes in a real etcd (keys written as nodes
write them, no broker): the placement, definition, bindings, Kafka topic description and
Kafka group records of each queue the node led, in several transactions when there are
many, and nothing of the other nodes' queues (same names in another vhost, an exchange
of that name, queues led elsewhere)."""

from __future__ import annotations

import asyncio
from typing import Any

from typer.testing import CliRunner

from smartbroker.cli.cluster import FORGET_OPS
from smartbroker.cli.main import app
from smartbroker.cluster import definitions_keys as dk
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.membership import KNOWN, NODES
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.placement import key as placement_key

QUEUES = FORGET_OPS  # enough keys for several transactions


def key(vhost: str, queue: str) -> bytes:
    return placement_key(vhost, queue).encode()


def binding(vhost: str, source: str, kind: str, destination: str, rk: str = "") -> bytes:
    return dk.key("bindings", vhost, source, kind, destination, rk, "h")


def topic(vhost: str, name: str) -> bytes:
    return b"kafka/topics/" + dk.seg(vhost) + b"/" + dk.seg(name)


def group(vhost: str, name: str) -> bytes:
    return b"kafka/groups/" + dk.seg(vhost) + b"/" + dk.seg(name)


GONE = [key("/", "orders"), dk.key("queues", "/", "orders"),
        binding("/", "amq.direct", "queue", "orders", "k"),
        binding("/", "x/y", "queue", "orders", "a/b"), topic("/", "orders"),
        group("/", "g-orders")]
KEPT = [(KNOWN + "b").encode(), key("/", "kept"), dk.key("queues", "/", "kept"),
        dk.key("queues", "other", "orders"), key("other", "orders"),
        binding("other", "amq.direct", "queue", "orders"),
        binding("/", "amq.direct", "exchange", "orders"),  # an exchange named orders
        binding("/", "amq.direct", "queue", "kept"), group("/", "g-kept")]


async def seed(endpoint: str, cluster: str) -> None:
    async with EtcdClient(endpoint, cluster) as etcd:
        await etcd.put(KNOWN + "a", b"{}")
        await etcd.put(KNOWN + "b", b"{}")
        for k in GONE + KEPT:
            value = b"x"
            if k.startswith(b"placement/"):
                value = Placement("b" if k in KEPT else "a").encode()
            elif k.startswith(b"kafka/groups/"):
                value = b"b" if k in KEPT else b"a"
            await etcd.put(k, value)
        for i in range(QUEUES):
            await etcd.put(key("/", f"q{i}"), Placement("a").encode())
            await etcd.put(dk.key("queues", "/", f"q{i}"), b"x")


async def present(endpoint: str, cluster: str, keys: list[bytes]) -> list[bytes]:
    async with EtcdClient(endpoint, cluster) as etcd:
        return [k for k in keys if await etcd.get(k) is not None]


def test_forget_deletes_what_the_node_led_and_nothing_else(etcd: Any, cluster_name: str) -> None:
    asyncio.run(seed(etcd.endpoint, cluster_name))
    result = CliRunner().invoke(app, ["cluster", "forget", "a", "--etcd", etcd.endpoint,
                                      "--cluster-name", cluster_name])
    assert result.exit_code == 0, result.output
    assert f"node a forgotten, with the {QUEUES + 1} queue(s) it led" in result.output
    many = [key("/", f"q{i}") for i in range(QUEUES)] + [
        dk.key("queues", "/", f"q{i}") for i in range(QUEUES)]
    assert asyncio.run(present(etcd.endpoint, cluster_name, [(KNOWN + "a").encode(), *GONE, *many])) == []
    assert asyncio.run(present(etcd.endpoint, cluster_name, KEPT)) == KEPT


def test_a_running_node_keeps_its_queues(etcd: Any, cluster_name: str) -> None:
    asyncio.run(seed(etcd.endpoint, cluster_name))

    async def up() -> None:
        async with EtcdClient(etcd.endpoint, cluster_name) as client:
            await client.put(NODES + "a", b"{}")

    asyncio.run(up())
    result = CliRunner().invoke(app, ["cluster", "forget", "a", "--etcd", etcd.endpoint,
                                      "--cluster-name", cluster_name])
    assert result.exit_code == 1 and "is running" in result.output
    assert asyncio.run(present(etcd.endpoint, cluster_name, GONE)) == GONE
