"""Priority queues (x-max-priority), single active consumer, consumer priorities (x-priority)."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import connect, drain, wait_until


class Recorder:
    """A consumer on its own channel that records (body, redelivered) and optionally acks."""

    def __init__(
        self,
        conn: pika.BlockingConnection,
        queue: str,
        prefetch: int = 0,
        ack: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.ch = conn.channel()
        if prefetch:
            self.ch.basic_qos(prefetch_count=prefetch)
        self.ack = ack
        self.got: list[tuple[bytes, bool]] = []
        self.tags: list[int] = []
        self.tag = self.ch.basic_consume(queue, self._on_message, arguments=arguments)

    def _on_message(self, ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        self.got.append((body, method.redelivered))
        if self.ack:
            ch.basic_ack(method.delivery_tag)
        else:
            self.tags.append(method.delivery_tag)

    @property
    def bodies(self) -> list[bytes]:
        return [b for b, _ in self.got]

    def ack_all(self) -> None:
        for tag in self.tags:
            self.ch.basic_ack(tag)
        self.tags.clear()

    def cancel(self) -> None:
        self.ch.basic_cancel(self.tag)


def pump_until(conns: list[pika.BlockingConnection], cond: Any, timeout: float = 5.0) -> None:
    """Pump several connections until ``cond()`` holds."""
    first, rest = conns[0], conns[1:]

    def check() -> bool:
        for c in rest:
            c.process_data_events(time_limit=0)
        return cond()

    wait_until(first, check, timeout)


def publish(ch: BlockingChannel, queue: str, bodies: list[bytes]) -> None:
    """Publish under confirms (the channel must be in confirm mode)."""
    for body in bodies:
        ch.basic_publish("", queue, body)


# -- x-max-priority ------------------------------------------------------------------


def test_priority_order_fifo_within_priority(ch: BlockingChannel, qname: str) -> None:
    """Higher priority first, FIFO within a priority; no priority means 0; a priority above
    x-max-priority counts as the maximum (the delivered property is unchanged)."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-priority": 5})
    sent = [("p0a", None), ("p1", 1), ("p5a", 5), ("p9", 9), ("p3", 3), ("p5b", 5), ("p0b", 0)]
    for body, prio in sent:
        ch.basic_publish("", qname, body.encode(), pika.BasicProperties(priority=prio))
    order = []
    while True:
        method, props, body = ch.basic_get(qname, auto_ack=True)
        if method is None:
            break
        order.append((body.decode(), props.priority))
    assert order == [("p5a", 5), ("p9", 9), ("p5b", 5), ("p3", 3), ("p1", 1), ("p0a", None), ("p0b", 0)]


def test_priority_ignored_without_max_priority(ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    for body, prio in ((b"low", 1), (b"high", 9)):
        ch.basic_publish("", qname, body, pika.BasicProperties(priority=prio))
    assert drain(ch, qname) == [b"low", b"high"]


def test_priority_consumer_sees_priority_order(conn: pika.BlockingConnection, ch: BlockingChannel, qname: str) -> None:
    """Messages waiting in a priority queue reach a new consumer highest first."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-priority": 10})
    for i, prio in enumerate([1, 2, 3, 10, 0]):
        ch.basic_publish("", qname, f"{i}".encode(), pika.BasicProperties(priority=prio))
    rec = Recorder(conn, qname, prefetch=1, ack=True)
    wait_until(conn, lambda: len(rec.got) == 5)
    assert rec.bodies == [b"3", b"2", b"1", b"0", b"4"]


def test_priority_requeue_keeps_priority_position(ch: BlockingChannel, qname: str) -> None:
    """A requeued message goes back ahead of lower-priority ones."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-priority": 5})
    for body, prio in ((b"hi", 5), (b"lo", 1)):
        ch.basic_publish("", qname, body, pika.BasicProperties(priority=prio))
    method, _, body = ch.basic_get(qname, auto_ack=False)
    assert body == b"hi"
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert drain(ch, qname) == [b"hi", b"lo"]


# -- x-single-active-consumer ------------------------------------------------------------


def test_sac_one_consumer_gets_everything(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=False, arguments={"x-single-active-consumer": True})
    conns = [connect(broker_url) for _ in range(3)]
    try:
        recs = [Recorder(c, qname, ack=True) for c in conns]
        assert ch.queue_declare(qname, passive=True).method.consumer_count == 3
        publish(ch, qname, [str(i).encode() for i in range(6)])
        pump_until(conns, lambda: len(recs[0].got) == 6)
        # a marker published last: when it arrives at the active one, nothing else is in flight
        publish(ch, qname, [b"end"])
        pump_until(conns, lambda: recs[0].bodies[-1:] == [b"end"])
        assert recs[0].bodies == [b"0", b"1", b"2", b"3", b"4", b"5", b"end"]
        assert recs[1].got == [] and recs[2].got == []
    finally:
        for c in conns:
            if c.is_open:
                c.close()
        ch.queue_delete(qname)


@pytest.mark.parametrize("how", ["connection", "channel"])
def test_sac_takeover_redelivers_unacked_first(ch: BlockingChannel, broker_url: str, qname: str, how: str) -> None:
    """When the active consumer's connection (or channel) closes, the next consumer in
    registration order takes over and gets the unacked messages first (redelivered), in order."""
    ch.confirm_delivery()
    ch.queue_declare(qname, arguments={"x-single-active-consumer": True})
    conns = [connect(broker_url) for _ in range(3)]
    try:
        first = Recorder(conns[0], qname, prefetch=2)
        second = Recorder(conns[1], qname, ack=True)
        third = Recorder(conns[2], qname, ack=True)
        publish(ch, qname, [b"0", b"1", b"2", b"3"])
        pump_until(conns, lambda: len(first.got) == 2)
        assert first.got == [(b"0", False), (b"1", False)]
        if how == "connection":
            conns[0].close()
        else:
            first.ch.close()
        live = conns[1:]
        pump_until(live, lambda: len(second.got) == 4)
        assert second.got == [(b"0", True), (b"1", True), (b"2", False), (b"3", False)]
        publish(ch, qname, [b"4"])
        pump_until(live, lambda: len(second.got) == 5)
        assert third.got == []
    finally:
        for c in conns:
            if c.is_open:
                c.close()
        ch.queue_delete(qname)


def test_sac_cancel_hands_over_in_registration_order(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    """basic.cancel of the active consumer activates the next one registered (skipping any
    that cancelled meanwhile)."""
    ch.confirm_delivery()
    ch.queue_declare(qname, arguments={"x-single-active-consumer": True})
    conns = [connect(broker_url) for _ in range(4)]
    try:
        recs = [Recorder(c, qname, ack=True) for c in conns]
        publish(ch, qname, [b"a"])
        pump_until(conns, lambda: recs[0].bodies == [b"a"])
        recs[1].cancel()  # an inactive one leaves
        recs[0].cancel()
        publish(ch, qname, [b"b"])
        pump_until(conns, lambda: recs[2].bodies == [b"b"])
        recs[2].cancel()
        publish(ch, qname, [b"c"])
        pump_until(conns, lambda: recs[3].bodies == [b"c"])
        assert [r.bodies for r in recs] == [[b"a"], [], [b"b"], [b"c"]]
    finally:
        for c in conns:
            if c.is_open:
                c.close()
        ch.queue_delete(qname)


def test_sac_cancel_then_channel_close_redelivers_unacked_first(
    ch: BlockingChannel, broker_url: str, qname: str
) -> None:
    """The active consumer cancels while holding an unacked message, then its channel closes:
    the next consumer gets the requeued message first (redelivered), then the rest in order."""
    ch.confirm_delivery()
    ch.queue_declare(qname, arguments={"x-single-active-consumer": True})
    conns = [connect(broker_url) for _ in range(2)]
    try:
        first = Recorder(conns[0], qname, prefetch=1)
        second = Recorder(conns[1], qname, ack=True)
        publish(ch, qname, [b"0", b"1", b"2"])
        pump_until(conns, lambda: first.got == [(b"0", False)])
        first.cancel()
        first.ch.close()
        pump_until(conns, lambda: len(second.got) == 3)
        assert second.got == [(b"0", True), (b"1", False), (b"2", False)]
        assert ch.queue_declare(qname, passive=True).method.consumer_count == 1
    finally:
        for c in conns:
            if c.is_open:
                c.close()
        ch.queue_delete(qname)


# -- consumer priorities ----------------------------------------------------------------------


def test_consumer_priority_high_first_while_it_has_credit(
    conn: pika.BlockingConnection, ch: BlockingChannel, qname: str
) -> None:
    """x-priority: the higher-priority consumer gets messages while it has prefetch credit;
    the lower one only while the higher is blocked; credit back -> the higher one again."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    low = Recorder(conn, qname, prefetch=10)
    high = Recorder(conn, qname, prefetch=2, arguments={"x-priority": 10})
    publish(ch, qname, [b"0", b"1", b"2", b"3"])
    wait_until(conn, lambda: len(high.got) + len(low.got) == 4)
    assert (high.bodies, low.bodies) == ([b"0", b"1"], [b"2", b"3"])
    high.ack_all()
    publish(ch, qname, [b"4", b"5", b"6"])
    wait_until(conn, lambda: len(high.got) + len(low.got) == 7)
    assert (high.bodies, low.bodies) == ([b"0", b"1", b"4", b"5"], [b"2", b"3", b"6"])


def test_consumer_priority_negative_below_default(
    conn: pika.BlockingConnection, ch: BlockingChannel, qname: str
) -> None:
    """The default consumer priority is 0: an x-priority -1 consumer only gets the overflow."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    negative = Recorder(conn, qname, arguments={"x-priority": -1})
    default = Recorder(conn, qname, prefetch=1)
    publish(ch, qname, [b"0", b"1", b"2"])
    wait_until(conn, lambda: len(default.got) + len(negative.got) == 3)
    assert (default.bodies, negative.bodies) == ([b"0"], [b"1", b"2"])


def test_consumer_priority_round_robin_within_priority(
    conn: pika.BlockingConnection, ch: BlockingChannel, qname: str
) -> None:
    """Consumers of equal priority share round-robin; the lower one gets nothing while they
    have credit."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    low = Recorder(conn, qname, ack=True, arguments={"x-priority": 1})
    a = Recorder(conn, qname, ack=True, arguments={"x-priority": 5})
    b = Recorder(conn, qname, ack=True, arguments={"x-priority": 5})
    publish(ch, qname, [str(i).encode() for i in range(6)])
    wait_until(conn, lambda: len(a.got) + len(b.got) + len(low.got) == 6)
    assert low.got == []
    assert sorted(a.bodies + b.bodies) == [str(i).encode() for i in range(6)]
    assert len(a.got) == len(b.got) == 3
