"""What the Kafka consumer-group tests share: a broker of their own whose groups' first
rebalance does not wait Kafka's 3 s for more members, topics made with kafka-python's
admin client, and polling members until the group is where a test wants it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka

DEADLINE = 60.0


@contextmanager
def quick_rebalance_broker(prefix: str, delay_ms: int) -> Iterator[BrokerProcess]:
    """A broker whose groups' first rebalance waits ``delay_ms`` for more members
    (``group.initial.rebalance.delay.ms``)."""
    with own_kafka(prefix, env={
            "SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS": str(delay_ms)}) as proc:
        yield proc


def create_topic(broker: BrokerProcess, prefix: str, partitions: int,
                 configs: Mapping[str, str] | None = None) -> str:
    """A new topic (CreateTopics from kafka-python) named ``prefix-<random>``."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))])
    finally:
        admin.close()
    return name


def wait_for(step: Callable[[], Any], done: Callable[[], Any], what: str,
             deadline: float = DEADLINE) -> None:
    """Run ``step`` (the members' polls, which is when a Kafka client rejoins and gets its
    assignment) until ``done()``, failing after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        step()
