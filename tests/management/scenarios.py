"""Real broker situations for the operations tests (management API, CLI, dashboard):
messages dead-lettered by a consumer's reject, and a partitioned stream with a consumer group.
Everything goes through pika, as an application would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import connect, wait_until

DEADLINE = 10.0


def poll(cond: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """``cond()``'s first truthy value, polled until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


@dataclass
class DeadLetters:
    """``work`` (bound to ``exchange`` with ``routing_key``) dead-letters into ``dlq``."""

    exchange: str
    routing_key: str
    work: str
    dlx: str
    dlq: str
    ch: BlockingChannel

    def ready(self, queue: str) -> int:
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def publish(self, bodies: list[str]) -> None:
        for body in bodies:
            self.ch.basic_publish(self.exchange, self.routing_key, body.encode(),
                                  pika.BasicProperties(delivery_mode=2))

    def reject_all(self, n: int) -> list[str]:
        """The buggy consumer: get ``n`` messages from ``work`` and reject them (no requeue)."""
        got: list[str] = []
        deadline = time.monotonic() + DEADLINE
        while len(got) < n:
            method, _, body = self.ch.basic_get(self.work)
            if method is None:
                assert time.monotonic() < deadline, f"only {len(got)} of {n} messages arrived"
                time.sleep(0.02)
                continue
            self.ch.basic_reject(method.delivery_tag, requeue=False)
            got.append(body.decode())
        poll(lambda: self.ready(self.dlq) >= n, what=f"{n} dead letters in {self.dlq}")
        return got

    def drain(self, queue: str, n: int) -> list[tuple[str, dict[str, Any]]]:
        """The fixed consumer: get and ack ``n`` messages, (body, headers) each."""
        out: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + DEADLINE
        while len(out) < n:
            method, props, body = self.ch.basic_get(queue)
            if method is None:
                assert time.monotonic() < deadline, f"only {len(out)} of {n} messages in {queue}"
                time.sleep(0.02)
                continue
            self.ch.basic_ack(method.delivery_tag)
            out.append((body.decode(), dict(props.headers or {})))
        return out


@contextmanager
def dead_letters(url: str, uid: str, n: int = 3) -> Iterator[DeadLetters]:
    """``n`` messages ``order-0..`` published to ``work`` and rejected into ``dlq``."""
    conn = connect(url)
    ch = conn.channel()
    ch.confirm_delivery()
    d = DeadLetters(exchange=f"test.orders.{uid}", routing_key="order.created",
                    work=f"test.work.{uid}", dlx=f"test.dlx.{uid}", dlq=f"test.work.{uid}.dlq", ch=ch)
    ch.exchange_declare(d.exchange, "direct")
    ch.exchange_declare(d.dlx, "fanout")
    ch.queue_declare(d.dlq, durable=True)
    ch.queue_bind(d.dlq, d.dlx)
    ch.queue_declare(d.work, durable=True, arguments={"x-dead-letter-exchange": d.dlx})
    ch.queue_bind(d.work, d.exchange, d.routing_key)
    try:
        d.publish([f"order-{i}" for i in range(n)])
        if n:
            d.reject_all(n)
        yield d
    finally:
        if ch.is_open:
            for q in (d.work, d.dlq):
                ch.queue_delete(q)
            for ex in (d.exchange, d.dlx):
                ch.exchange_delete(ex)
        if conn.is_open:
            conn.close()


@dataclass
class GroupStream:
    """A 2-partition stream with ``n`` messages and a group ``group`` that consumed them all."""

    name: str
    group: str
    conn: pika.BlockingConnection
    ch: BlockingChannel
    consumer_tag: str | None = None

    def stop_group(self) -> None:
        if self.consumer_tag is not None:
            self.ch.basic_cancel(self.consumer_tag)
            self.consumer_tag = None


@contextmanager
def stream_with_group(url: str, name: str, n: int = 10, group: str = "g") -> Iterator[GroupStream]:
    """Declare the stream, publish ``n`` keyed messages, and run one group member that acks
    each delivery until the group's lag is 0 (the member stays: call ``stop_group()``)."""
    conn = connect(url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True,
                     arguments={"x-queue-type": "stream", "x-partitions": 2})
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", name, f"event-{i}".encode(), pika.BasicProperties(
            delivery_mode=2, headers={"x-message-key": f"key-{i}"}))
    acked: list[int] = []

    def on_message(c: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        c.basic_ack(method.delivery_tag)
        acked.append(1)

    ch.basic_qos(prefetch_count=50)
    tag = ch.basic_consume(name, on_message, arguments={"x-consumer-group": group,
                                                         "x-stream-offset": "first"})
    wait_until(conn, lambda: len(acked) >= n, timeout=DEADLINE)
    conn.process_data_events(time_limit=0)  # flush the acks
    gs = GroupStream(name=name, group=group, conn=conn, ch=ch, consumer_tag=tag)
    try:
        yield gs
    finally:
        if conn.is_open:
            gs.stop_group()
            ch.queue_delete(name)
            conn.close()
