"""An in-process cluster for forwarding tests: three brokers in the test's event loop,
each with its real AMQP listener on a free loopback port and its real cluster link
(``ClusterLink``, authenticated TCP); clients are aio-pika (or pika) over real sockets.
What etcd does in a full cluster (definitions and placements seen by every node) is done
by ``Node.place``: the code under test is forwarding (``tests/cluster/test_forwarding*``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika

from smartbroker.broker.core import Broker
from smartbroker.broker.persistence import Persistence
from smartbroker.cluster.forwarding_node import QueueForwarding
from smartbroker.cluster.link import ClusterLink
from smartbroker.cluster.placement import Placement, PlacementTable
from smartbroker.config import Config
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher

SECRET = b"forwarding-test-secret"
TIMEOUT = 10.0


@dataclass
class Node:
    name: str
    broker: Broker
    persistence: Persistence
    server: asyncio.AbstractServer
    link: ClusterLink
    forwarding: QueueForwarding

    @property
    def url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/"

    def place(self, queue: str, leader: str, **declare: object) -> None:
        """What the definitions watch does on every node: the placement, then the queue."""
        self.forwarding.placement.queues[("/", queue)] = Placement(leader)
        if self.name != leader:
            self.broker.vhosts["/"].declare_queue(queue, **declare)  # type: ignore[arg-type]


async def start_node(name: str, directory: Path, window: int = 4 * 1024 * 1024) -> Node:
    config = Config(data_dir=directory)
    persistence = Persistence(directory)
    broker = Broker(config, persistence)
    flusher = Flusher()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: AMQPConnection(broker, flusher), "127.0.0.1", 0)
    link = await ClusterLink(name, "forwarding-test", SECRET, heartbeat=0.2,
                             window=window).start()
    forwarding = QueueForwarding(name, broker.vhosts, link, PlacementTable(name),
                                 connections=broker.connections)
    forwarding.register(link)
    link.on_writable(forwarding.writable)
    forwarding.attach(broker.vhosts.values())
    return Node(name, broker, persistence, server, link, forwarding)


async def stop_node(node: Node) -> None:
    await node.link.close()
    for conn in list(node.broker.connections):
        if conn.transport is not None:
            conn.transport.abort()
    node.server.close()
    await node.server.wait_closed()
    await node.persistence.aclose(node.broker)


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, window: int = 4 * 1024 * 1024) -> AsyncIterator[list[Node]]:
    nodes = [await start_node(f"n{i}", tmp_path / f"n{i}", window) for i in (1, 2, 3)]
    try:
        for a in nodes:
            for b in nodes:
                if a is not b:
                    a.link.add_peer(b.name, "127.0.0.1", b.link.port)
        for a in nodes:
            for b in nodes:
                if a is not b:
                    await a.link.wait_connected(b.name, TIMEOUT)
        yield nodes
    finally:
        for node in nodes:
            await stop_node(node)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def declare_on_leader(leader: Node, nodes: list[Node], queue: str) -> None:
    conn = await aio_pika.connect(leader.url)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue(queue, durable=True)
    for node in nodes:
        node.place(queue, leader.name, durable=True)
