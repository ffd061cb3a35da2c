"""A replicated quorum queue delivers a message only once its replica set committed it
(issue 16, queues/quorum_hold.py), as RabbitMQ's Raft queue applies an enqueue only once
committed: three real nodes and a real etcd, pika clients.

Both followers of the queue are paused (SIGSTOP: with min-insync 2 of 3 one follower
still commits). A message published on the leader's node is accepted and counted
(queue.declare-ok), but its consumer, on that node, does not get it, neither while the
followers' copies are merely missing nor once the leader drops them from the in-sync
set (alone, below min-insync, its high watermark passes the message without a commit).
Resumed, the followers catch up, and the consumer gets both messages, in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import member_nodes, poll
from tests.cluster.quorum_clients import connect, in_sync

NAMES = ("n1", "n2", "n3")
QUEUE = "qc-held"
QUIET = 0.5  # seconds the consumer is watched for a delivery that must not come


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("quorum-commit"), etcd.endpoint, NAMES) as procs:
        yield procs


class Consumer:
    """A basic.consume on one node, read from the test's thread."""

    def __init__(self, node: BrokerProcess, queue: str) -> None:
        self.conn = connect(node)
        self.ch = self.conn.channel()
        self.got: list[bytes] = []
        self.ch.basic_consume(queue, lambda ch, m, p, body: self.got.append(body),
                              auto_ack=True)

    def events(self, seconds: float) -> list[bytes]:
        self.conn.process_data_events(time_limit=seconds)
        return self.got

    def close(self) -> None:
        self.conn.close()


def test_a_message_reaches_its_consumer_only_once_committed(
        nodes: dict[str, BrokerProcess]) -> None:
    leader = nodes["n1"]
    conn = connect(leader)
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    poll(lambda: set(in_sync(leader, QUEUE)) == set(NAMES), "all three in sync")
    consumer = Consumer(leader, QUEUE)
    followers = [nodes["n2"], nodes["n3"]]
    try:
        ch.basic_publish("", QUEUE, b"before")
        poll(lambda: consumer.events(0.1) == [b"before"], "committed: delivered")
        for node in followers:
            os.kill(node.pid, signal.SIGSTOP)
        try:
            ch.basic_publish("", QUEUE, b"while-in-sync")
            assert consumer.events(QUIET) == [b"before"]
            # accepted and counted (appended on the leader), and still not delivered
            poll(lambda: ch.queue_declare(QUEUE, passive=True).method.message_count == 1,
                 "the publish counted")
            assert consumer.events(QUIET) == [b"before"]
            poll(lambda: in_sync(leader, QUEUE) == ("n1",), "the paused followers dropped")
            ch.basic_publish("", QUEUE, b"alone")
            poll(lambda: ch.queue_declare(QUEUE, passive=True).method.message_count == 2,
                 "the second publish counted")
            assert consumer.events(QUIET) == [b"before"]
        finally:
            for node in followers:
                os.kill(node.pid, signal.SIGCONT)
        poll(lambda: len(consumer.events(0.1)) == 3, "committed once the followers are back",
             timeout=30)
        assert consumer.got == [b"before", b"while-in-sync", b"alone"]
        assert ch.queue_declare(QUEUE, passive=True).method.message_count == 0
    finally:
        consumer.close()
        with contextlib.suppress(pika.exceptions.AMQPError):
            ch.queue_delete(QUEUE)
        conn.close()

