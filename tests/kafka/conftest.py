"""A broker with its Kafka listener on a free port, shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-") as proc:
        yield proc
