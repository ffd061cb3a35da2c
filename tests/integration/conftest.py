"""Client fixtures and small wait helpers shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import pika_params


@pytest.fixture
def conn(broker_url: str) -> Iterator[pika.BlockingConnection]:
    """A pika BlockingConnection, closed after the test."""
    c = pika.BlockingConnection(pika_params(broker_url))
    try:
        yield c
    finally:
        if c.is_open:
            c.close()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> BlockingChannel:
    """A channel on ``conn``."""
    return conn.channel()
