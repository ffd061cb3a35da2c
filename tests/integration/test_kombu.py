"""kombu (py-amqp transport) against the broker: declarations, producer/consumer, SimpleQueue."""

from __future__ import annotations

from collections.abc import Iterator

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from .helpers import connect, drain


@pytest.fixture
def kconn(broker_url: str) -> Iterator[Connection]:
    with Connection(broker_url, connect_timeout=5) as c:
        c.connect()
        yield c


def test_producer_consumer_topic(kconn: Connection, xname: str, uid: str) -> None:
    """kombu declares a topic exchange, a queue and a binding; JSON messages flow through them."""
    exchange = Exchange(xname, type="topic", durable=False)
    queue = Queue(f"kombu.orders.{uid}", exchange=exchange, routing_key="orders.*", auto_delete=True, durable=False)
    received: list[tuple[dict, str]] = []

    def on_message(body: dict, message) -> None:  # noqa: ANN001 - kombu Message
        received.append((body, message.delivery_info["routing_key"]))
        message.ack()

    with kconn.channel() as channel:
        producer = Producer(channel, exchange=exchange, serializer="json")
        with Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"]):
            producer.publish({"id": 1}, routing_key="orders.created", declare=[queue])
            producer.publish({"id": 2}, routing_key="orders.eu.created")  # no match for orders.*
            producer.publish({"id": 3}, routing_key="orders.shipped")
            while len(received) < 2:
                kconn.drain_events(timeout=5)
    assert received == [({"id": 1}, "orders.created"), ({"id": 3}, "orders.shipped")]


@pytest.fixture
def kconfirm(broker_url: str) -> Iterator[Connection]:
    """A kombu connection whose publishes wait for publisher confirms."""
    with Connection(broker_url, connect_timeout=5, transport_options={"confirm_publish": True}) as c:
        c.connect()
        yield c


def test_simple_queue(kconfirm: Connection, uid: str) -> None:
    """SimpleQueue put/get/qsize over a direct exchange of the same name.

    Confirmed publishes: RabbitMQ may answer the passive declare behind qsize() before
    unconfirmed publishes are enqueued.
    """
    name = f"kombu.simple.{uid}"
    q = kconfirm.SimpleQueue(name, queue_opts={"auto_delete": False})
    try:
        for i in range(3):
            q.put({"n": i})
        assert q.qsize() == 3
        got = []
        for _ in range(3):
            message = q.get(block=True, timeout=5)
            got.append(message.payload)
            message.ack()
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(q.Empty):
            q.get(block=False)
    finally:
        q.close()  # cancels the consumer first: deleting under it would make RabbitMQ cancel it
        with kconfirm.channel() as channel:
            channel.queue_delete(name)
            channel.exchange_delete(name)


def test_kombu_declarations_visible_to_pika(kconn: Connection, broker_url: str, xname: str, uid: str) -> None:
    """Entities and bindings declared by kombu route messages published by pika."""
    exchange = Exchange(xname, type="fanout", durable=False)
    queue = Queue(f"kombu.fan.{uid}", exchange=exchange, durable=False, auto_delete=False)
    with kconn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        try:
            with connect(broker_url) as pc:
                ch = pc.channel()
                ch.basic_publish(xname, "ignored", b"from pika")
                assert drain(ch, queue.name) == [b"from pika"]
        finally:
            bound.delete()


def test_kombu_inequivalent_redeclare(kconn: Connection, xname: str) -> None:
    """py-amqp surfaces RabbitMQ's 406 as PreconditionFailed."""
    with kconn.channel() as channel:
        Exchange(xname, type="direct", durable=False)(channel).declare()
    with kconn.channel() as channel, pytest.raises(amqp.exceptions.PreconditionFailed):
        Exchange(xname, type="fanout", durable=False)(channel).declare()


def test_kombu_passive_missing_queue(kconn: Connection, uid: str) -> None:
    """Passive declare of a missing queue: NotFound (404)."""
    with kconn.channel() as channel, pytest.raises(amqp.exceptions.NotFound):
        channel.queue_declare(f"kombu.missing.{uid}", passive=True)


def test_kombu_confirm_publish(kconfirm: Connection, uid: str) -> None:
    """With confirm_publish, kombu waits for the broker's ack; headers and properties survive."""
    name = f"kombu.confirm.{uid}"
    with kconfirm.channel() as channel:
        queue = Queue(name, durable=False, auto_delete=False)(channel)
        queue.declare()
        try:
            Producer(channel).publish(
                b"raw-bytes", routing_key=name, headers={"h": 1},
                content_type="application/data", content_encoding="binary", priority=4,
            )
            assert queue.queue_declare(passive=True).message_count == 1
            message = queue.get(no_ack=True)
            assert message is not None
            assert message.body == b"raw-bytes"
            assert message.headers == {"h": 1}
            assert message.properties["priority"] == 4
        finally:
            queue.delete()


def test_kombu_confirm_publish_to_missing_exchange(kconfirm: Connection, xname: str) -> None:
    """Publishing to a missing exchange surfaces the 404 channel error as NotFound."""
    with kconfirm.channel() as channel, pytest.raises(amqp.exceptions.NotFound):
        producer = Producer(channel, exchange=Exchange(xname, type="direct"), auto_declare=False)
        producer.publish(b"x", routing_key="k")
