"""A smartbroker of a test's own with its Kafka listener on, for the Kafka tests that
start, restart or kill their broker or need its Kafka settings: skipped when the tests
run against an external broker (``SMARTBROKER_TEST_URL``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, running_broker

OWN_LISTENER = "the Kafka listener is smartbroker's own"


@contextmanager
def own_kafka(prefix: str, *, why: str = OWN_LISTENER, **kwargs: Any) -> Iterator[BrokerProcess]:
    """``running_broker(prefix, kafka=True, **kwargs)``; against an external broker the
    test is skipped, saying ``why`` it needs one of its own."""
    if EXTERNAL_URL:
        pytest.skip(why)
    with running_broker(prefix, kafka=True, **kwargs) as proc:
        yield proc
