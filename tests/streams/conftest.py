"""Fixtures for the stream-queue tests (see stream_helpers.py for the client helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from stream_helpers import Reader, declare_stream

from tests.integration.helpers import connect


@pytest.fixture
def conn(broker_url: str) -> Iterator[pika.BlockingConnection]:
    c = connect(broker_url)
    try:
        yield c
    finally:
        if c.is_open:
            c.close()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> Any:
    return conn.channel()


@pytest.fixture
def stream(broker_url: str, qname: str) -> Iterator[Callable[..., str]]:
    """``stream(partitions=4, max_age="1h")`` declares a stream named after the test
    (``stream(name=..., ...)`` for another one); all are deleted afterwards."""
    made: list[str] = []
    c = connect(broker_url)
    chan = c.channel()

    def make(name: str | None = None, **kwargs: Any) -> str:
        name = name or (qname if qname not in made else f"{qname}.{len(made)}")
        declare_stream(chan, name, **kwargs)
        made.append(name)
        return name

    try:
        yield make
    finally:
        if c.is_open:
            c.close()
        with connect(broker_url) as cleanup:
            cc = cleanup.channel()
            for name in made:
                cc.queue_delete(name)


@pytest.fixture
def readers() -> Iterator[Callable[..., Reader]]:
    """A ``Reader`` factory; every reader's connection is closed afterwards."""
    made: list[Reader] = []

    def make(*args: Any, **kwargs: Any) -> Reader:
        r = Reader(*args, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
