"""Consumers that used up their credit (issue 12 A): a queue no longer asks them on every
publish, so what must still hold is that credit coming back (ack, nack, reject, recover,
global qos raised) brings each one back, in RabbitMQ's order, and that a cancelled consumer
is never woken. Every test here runs against RabbitMQ too."""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import ready_count, wait_until


class Holder:
    """Consumers on one channel that keep what they get unacked until told."""

    def __init__(self, conn: pika.BlockingConnection, queue: str, consumers: int, prefetch: int = 1,
                 global_prefetch: int = 0, arguments: dict[str, Any] | None = None) -> None:
        self.conn = conn
        self.ch = conn.channel()
        if prefetch:
            self.ch.basic_qos(prefetch_count=prefetch)
        if global_prefetch:
            self.ch.basic_qos(prefetch_count=global_prefetch, global_qos=True)
        self.got: dict[str, list[tuple[bytes, int]]] = {}
        self.tags = [self.ch.basic_consume(queue, self._on_message, arguments=arguments)
                     for _ in range(consumers)]
        for tag in self.tags:
            self.got[tag] = []

    def _on_message(self, ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        self.got[method.consumer_tag].append((body, method.delivery_tag))

    def total(self) -> int:
        return sum(len(v) for v in self.got.values())

    def bodies(self, tag: str) -> list[bytes]:
        return [body for body, _ in self.got[tag]]

    def last_tag(self, consumer: str) -> int:
        return self.got[consumer][-1][1]


def publish(ch: BlockingChannel, queue: str, bodies: list[bytes]) -> None:
    for body in bodies:
        ch.basic_publish("", queue, body)


def settle(holder: Holder, queue: str) -> int:
    """The queue's ready count, read by a round trip on the holder's channel: the broker
    answers it after what was sent before on that channel (acks, cancel, qos) and after
    the confirmed publishes, so a delivery it made, rightly or wrongly, has left the ready
    count by then. No waiting for a delivery that should not come; deliveries already
    received are handed to the callbacks."""
    ready = ready_count(holder.ch, queue)
    holder.conn.process_data_events(time_limit=0)
    return ready


def test_ack_brings_back_exactly_the_consumer_that_acked(conn: pika.BlockingConnection,
                                                         ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=40)
    publish(ch, qname, [f"m{i}".encode() for i in range(40)])
    wait_until(conn, lambda: holder.total() == 40)
    assert all(len(v) == 1 for v in holder.got.values())  # round-robin: one each
    publish(ch, qname, [f"n{i}".encode() for i in range(25)])
    assert settle(holder, qname) == 25 and holder.total() == 40
    for i, tag in enumerate((holder.tags[7], holder.tags[3], holder.tags[31])):
        holder.ch.basic_ack(holder.last_tag(tag))
        wait_until(conn, lambda i=i: holder.total() == 41 + i)
        assert holder.bodies(tag)[-1] == f"n{i}".encode()  # FIFO, to the one with credit
    assert settle(holder, qname) == 22 and holder.total() == 43


def test_nack_requeue_and_reject_give_credit_back(conn: pika.BlockingConnection,
                                                  ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=3)
    publish(ch, qname, [b"0", b"1", b"2", b"3"])
    wait_until(conn, lambda: holder.total() == 3)
    first = holder.tags[0]
    holder.ch.basic_reject(holder.last_tag(first), requeue=False)  # dropped: "3" goes to it
    wait_until(conn, lambda: holder.total() == 4)
    assert holder.bodies(first) == [b"0", b"3"]
    holder.ch.basic_nack(holder.last_tag(first), requeue=True)  # "3" back, to its only taker
    wait_until(conn, lambda: holder.total() == 5)
    assert holder.bodies(first) == [b"0", b"3", b"3"]
    assert ready_count(ch, qname) == 0


def test_multiple_ack_wakes_every_consumer_it_frees(conn: pika.BlockingConnection,
                                                    ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=5)
    publish(ch, qname, [str(i).encode() for i in range(5)])
    wait_until(conn, lambda: holder.total() == 5)
    publish(ch, qname, [str(i).encode() for i in range(5, 12)])
    assert settle(holder, qname) == 7
    holder.ch.basic_ack(0, multiple=True)
    wait_until(conn, lambda: holder.total() == 10)
    assert all(len(v) == 2 for v in holder.got.values())
    assert ready_count(ch, qname) == 2


def test_recover_requeues_and_wakes(conn: pika.BlockingConnection, ch: BlockingChannel,
                                    qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=2)
    publish(ch, qname, [b"a", b"b", b"c"])
    wait_until(conn, lambda: holder.total() == 2)
    holder.ch.basic_recover(requeue=True)
    wait_until(conn, lambda: holder.total() == 4)
    assert sorted(b for v in holder.got.values() for b, _ in v[1:]) == [b"a", b"b"]
    assert ready_count(ch, qname) == 1


def test_global_qos_credit_back_wakes_the_channels_consumers(
        conn: pika.BlockingConnection, ch: BlockingChannel, qname: str) -> None:
    """basic.qos global=true: the channel's consumers share the limit; one ack frees one
    delivery, to any of them; raising the limit frees as many more."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=4, prefetch=0, global_prefetch=2)
    publish(ch, qname, [str(i).encode() for i in range(10)])
    wait_until(conn, lambda: holder.total() == 2)
    assert settle(holder, qname) == 8 and holder.total() == 2
    some = next(tag for tag, got in holder.got.items() if got)
    holder.ch.basic_ack(holder.last_tag(some))
    wait_until(conn, lambda: holder.total() == 3)
    assert settle(holder, qname) == 7 and holder.total() == 3
    holder.ch.basic_qos(prefetch_count=5, global_qos=True)
    wait_until(conn, lambda: holder.total() == 6)  # 2 unacked + 3 more
    assert settle(holder, qname) == 4 and holder.total() == 6


def test_cancelled_blocked_consumer_is_not_woken_by_its_late_ack(
        conn: pika.BlockingConnection, ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    holder = Holder(conn, qname, consumers=2)
    publish(ch, qname, [b"0", b"1", b"2"])
    wait_until(conn, lambda: holder.total() == 2)
    gone, stays = holder.tags
    holder.ch.basic_cancel(gone)
    holder.ch.basic_ack(holder.last_tag(gone))  # settling after cancel is allowed
    assert settle(holder, qname) == 1 and holder.total() == 2
    holder.ch.basic_ack(holder.last_tag(stays))
    wait_until(conn, lambda: holder.total() == 3)
    assert holder.bodies(stays)[-1] == b"2"


def test_blocked_high_priority_consumer_takes_over_again_when_it_acks(
        conn: pika.BlockingConnection, ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    high = Holder(conn, qname, consumers=3, arguments={"x-priority": 5})
    low = Holder(conn, qname, consumers=2, prefetch=100)
    publish(ch, qname, [str(i).encode() for i in range(5)])
    wait_until(conn, lambda: high.total() + low.total() == 5)
    assert high.total() == 3 and low.total() == 2
    tag = high.tags[1]
    high.ch.basic_ack(high.last_tag(tag))
    publish(ch, qname, [b"5"])
    wait_until(conn, lambda: high.total() + low.total() == 6)
    assert high.bodies(tag)[-1] == b"5"
