"""Helpers for the stream-queue tests: declare, publish, collect deliveries, pump.

Everything here is what a client sees: deliveries with their ``x-stream-offset`` /
``x-stream-partition`` headers and ``redelivered`` flag. Waiting pumps pika's I/O until a
condition holds or a deadline passes; ``quiet`` pumps for a fixed window only to prove
that nothing *more* arrives (the one thing no condition can express).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mmh3
import pika
import pika.exceptions
from kafka.partitioner.default import murmur2 as kafka_murmur2
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import TIMEOUT, connect

SEED = 104729


def partition_of(key: str, partitions: int) -> int:
    """The partition smartbroker must choose for an ``x-message-key``: a Kafka client's
    (kafka-python's murmur2 default partitioner), so either protocol puts a key in one place."""
    return (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def routing_partition_of(routing_key: str, partitions: int) -> int:
    """The partition of a message without ``x-message-key``: the super-stream hash of
    RabbitMQ stream clients over its routing key."""
    return mmh3.hash(routing_key, seed=SEED, signed=False) % partitions


def keys_by_partition(partitions: int, per: int = 1, prefix: str = "key") -> dict[int, list[str]]:
    """``per`` distinct keys landing in each partition."""
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per for v in out.values()):
        key = f"{prefix}-{i}"
        p = partition_of(key, partitions)
        if len(out[p]) < per:
            out[p].append(key)
        i += 1
    return out


def stream_args(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": "stream"}
    for k, v in kwargs.items():
        args["x-" + k.replace("_", "-")] = v
    return args


def declare_stream(ch: BlockingChannel, name: str, **kwargs: Any) -> Any:
    """``declare_stream(ch, q, partitions=4, max_age="1h")`` -> declare-ok frame."""
    return ch.queue_declare(name, durable=True, arguments=stream_args(**kwargs))


def publish(ch: BlockingChannel, queue: str, bodies: Iterable[bytes | str], *,
            exchange: str = "", routing_key: str | None = None,
            key: Callable[[int], str | None] | None = None,
            headers: Callable[[int], dict[str, Any]] | None = None) -> None:
    """Publish with confirms on (``ch.confirm_delivery()`` is turned on here once).

    ``key(i)`` gives message i's routing key (default: the queue name via the default
    exchange); ``headers(i)`` its headers.
    """
    if not getattr(ch, "_sb_confirming", False):
        ch.confirm_delivery()
        ch._sb_confirming = True  # type: ignore[attr-defined]
    for i, body in enumerate(bodies):
        rk = key(i) if key else (routing_key if routing_key is not None else queue)
        props = pika.BasicProperties(delivery_mode=2, headers=headers(i) if headers else None)
        ch.basic_publish(exchange, rk or "", body.encode() if isinstance(body, str) else body, props)


def publish_keyed(ch: BlockingChannel, queue: str, items: Sequence[tuple[str, str]]) -> None:
    """Publish ``(key, body)`` pairs, the key as ``x-message-key``, via the default exchange."""
    publish(ch, queue, [b for _, b in items], headers=lambda i: {"x-message-key": items[i][0]})


@dataclass
class Got:
    body: bytes
    offset: int | None
    partition: int | None
    redelivered: bool
    tag: int
    routing_key: str
    headers: dict[str, Any]

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def pos(self) -> tuple[int | None, int | None]:
        return (self.partition, self.offset)


@dataclass(eq=False)
class Reader:
    """One connection, one channel, one ``basic.consume`` on a stream.

    ``ack``: True acks each delivery on arrival; False never; an int acks only the first
    that many deliveries (later ones stay unacked and hold credit).
    """

    url: str
    queue: str
    args: dict[str, Any] = field(default_factory=dict)
    prefetch: int = 1000
    ack: bool | int = True
    auto_ack: bool = False
    heartbeat: int | None = None
    got: list[Got] = field(default_factory=list)
    acked: list[Got] = field(default_factory=list)

    def __post_init__(self) -> None:
        kw = {"heartbeat": self.heartbeat} if self.heartbeat is not None else {}
        self.conn = connect(self.url, **kw)
        self.ch = self.conn.channel()
        if self.prefetch:
            self.ch.basic_qos(prefetch_count=self.prefetch)
        self.tag = self.ch.basic_consume(self.queue, self._on, auto_ack=self.auto_ack,
                                         arguments=self.args)

    def _on(self, ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        h = dict(props.headers or {})
        g = Got(body, h.get("x-stream-offset"), h.get("x-stream-partition"),
                bool(method.redelivered), method.delivery_tag, method.routing_key, h)
        self.got.append(g)
        if self.auto_ack:
            return
        if self.ack is True or (self.ack is not False and len(self.got) <= self.ack):
            ch.basic_ack(method.delivery_tag)
            self.acked.append(g)

    def ack_msg(self, g: Got) -> None:
        self.ch.basic_ack(g.tag)
        self.acked.append(g)

    def sync(self) -> None:
        """A round trip on the channel: everything sent before (acks) has been processed."""
        self.ch.basic_qos(prefetch_count=self.prefetch)

    def pump(self, seconds: float = 0.0) -> None:
        self.conn.process_data_events(time_limit=seconds)

    def cancel(self) -> None:
        self.ch.basic_cancel(self.tag)

    def close(self) -> None:
        try:
            if self.conn.is_open:
                self.conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass

    # views
    @property
    def bodies(self) -> list[str]:
        return [g.text for g in self.got]

    @property
    def offsets(self) -> list[int | None]:
        return [g.offset for g in self.got]

    @property
    def partitions(self) -> set[int | None]:
        return {g.partition for g in self.got}


def pump_until(readers: Sequence[Reader], cond: Callable[[], bool], timeout: float = TIMEOUT,
               what: str = "condition") -> float:
    """Pump every open reader's connection until ``cond()``; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        for r in readers:
            if r.conn.is_open:
                r.conn.process_data_events(time_limit=0.01)
    return time.monotonic() - start


def quiet(readers: Sequence[Reader], seconds: float = 0.3) -> None:
    """Pump for a fixed window: used only to show that nothing more is delivered."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for r in readers:
            if r.conn.is_open:
                r.conn.process_data_events(time_limit=0.01)


def read_all(url: str, queue: str, n: int, args: dict[str, Any] | None = None,
             prefetch: int = 1000) -> list[Got]:
    """A fresh reader (default from ``first``) that collects ``n`` deliveries, then leaves."""
    r = Reader(url, queue, args={"x-stream-offset": "first", **(args or {})}, prefetch=prefetch)
    try:
        pump_until([r], lambda: len(r.got) >= n, what=f"{n} deliveries")
        return list(r.got)
    finally:
        r.close()
