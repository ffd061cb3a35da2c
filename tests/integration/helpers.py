"""Helpers for the integration tests: event waiting, async runner, error checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

T = TypeVar("T")


class Broker(Protocol):
    """What tests need from the ``broker`` fixture (tests/conftest.py BrokerInfo)."""

    url: str
    host: str
    port: int
    external: bool

TIMEOUT = 5.0


def pika_params(url: str, **kwargs: Any) -> pika.URLParameters:
    """URLParameters with short timeouts so failures surface fast."""
    params = pika.URLParameters(url)
    params.socket_timeout = TIMEOUT
    params.blocked_connection_timeout = TIMEOUT
    params.connection_attempts = 1
    for key, value in kwargs.items():
        setattr(params, key, value)
    return params


def connect(url: str, **kwargs: Any) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika_params(url, **kwargs))


def wait_until(
    conn: pika.BlockingConnection, cond: Callable[[], bool], timeout: float = TIMEOUT
) -> None:
    """Pump pika's I/O until ``cond()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("condition not met before timeout")
        conn.process_data_events(time_limit=min(0.05, remaining))


def ready_count(chan: BlockingChannel, queue: str) -> int:
    """Messages ready (not delivered/unacked) in ``queue``, from a passive declare."""
    return chan.queue_declare(queue, passive=True).method.message_count


@contextmanager
def channel_error(code: int) -> Iterator[list[pika.exceptions.ChannelClosedByBroker]]:
    """Expect the block to fail with a channel.close carrying ``code``."""
    box: list[pika.exceptions.ChannelClosedByBroker] = []
    try:
        yield box
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == code, exc
        box.append(exc)
    else:
        raise AssertionError(f"expected channel error {code}")


@contextmanager
def connection_error(code: int) -> Iterator[list[pika.exceptions.ConnectionClosedByBroker]]:
    """Expect the block to fail with a connection.close carrying ``code``."""
    box: list[pika.exceptions.ConnectionClosedByBroker] = []
    try:
        yield box
    except pika.exceptions.ConnectionClosedByBroker as exc:
        assert exc.reply_code == code, exc
        box.append(exc)
    else:
        raise AssertionError(f"expected connection error {code}")


def queue_exists(url: str, name: str) -> bool:
    """Passive-declare ``name`` on a fresh connection: True if it exists.

    Another connection's exclusive queue answers 405 RESOURCE_LOCKED, which also means it exists.
    """
    with connect(url) as c:
        chan = c.channel()
        try:
            chan.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code in (404, 405), exc
            return exc.reply_code == 405
        return True


def exchange_exists(url: str, name: str) -> bool:
    with connect(url) as c:
        chan = c.channel()
        try:
            chan.exchange_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404, exc
            return False
        return True


def get_body(chan: BlockingChannel, queue: str, auto_ack: bool = True) -> bytes | None:
    """basic.get one message body (None on get-empty)."""
    _, _, body = chan.basic_get(queue, auto_ack=auto_ack)
    return body


def drain(chan: BlockingChannel, queue: str) -> list[bytes]:
    """basic.get (auto-ack) until get-empty; return the bodies in order."""
    out: list[bytes] = []
    while (body := get_body(chan, queue)) is not None:
        out.append(body)
    return out


def run(coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 20.0) -> T:
    """Run an async test body with an overall deadline."""

    async def main() -> T:
        return await asyncio.wait_for(coro_fn(*args), timeout)

    return asyncio.run(main())


def eventually(cond: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.02) -> None:
    """Poll ``cond`` (which does its own broker round trips) until true or fail at the deadline.

    Used for effects RabbitMQ applies asynchronously, e.g. deleting exclusive queues
    after their connection has gone.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before timeout")
        time.sleep(interval)
