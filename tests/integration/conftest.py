"""Client fixtures and small wait helpers shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import connect, pika_params


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


@pytest.fixture
def xname(uid: str, request: pytest.FixtureRequest, broker_url: str) -> Iterator[str]:
    """A unique exchange name; ``xname``, ``xname + ".1"`` .. ``".3"`` are deleted afterwards."""
    name = f"test.x.{request.node.name[:30]}.{uid}"
    yield name
    with connect(broker_url) as c:
        chan = c.channel()
        for n in (name, *(f"{name}.{i}" for i in range(1, 4))):
            chan.exchange_delete(n)  # RabbitMQ: deleting a missing exchange is not an error


@pytest.fixture
def cch(conn: pika.BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode."""
    c = conn.channel()
    c.confirm_delivery()
    return c
