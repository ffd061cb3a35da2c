"""A broker with its Kafka listener on a free port, shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, running_broker


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[BrokerProcess]:
    if EXTERNAL_URL:
        pytest.skip("the Kafka listener is smartbroker's own")
    with running_broker("smartbroker-kafka-", kafka=True) as proc:
        yield proc
