"""The AMQP side of the Kafka tests (pika): declare a stream, read it as a stream
consumer, delete it. What the cross-protocol, produce, compression and compaction tests
compare Kafka clients' views with; the Kafka side is ``cross_protocol_readers.py`` and
``kafka_producers.py``."""

from __future__ import annotations

from typing import Any

import pika

from smartbroker.launcher import BrokerProcess

Delivery = tuple[Any, bytes]  # (properties, body)


def stream_arguments(partitions: int) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-partitions": partitions}


def declare_stream(broker: BrokerProcess, name: str, partitions: int = 1) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        conn.channel().queue_declare(name, durable=True, arguments=stream_arguments(partitions))
    finally:
        conn.close()


def delete_queue(broker: BrokerProcess, name: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


def deliveries(ch: Any, queue: str, count: int, inactivity: float = 10.0,
               **arguments: Any) -> list[Delivery]:
    """The first ``count`` deliveries to a stream consumer on ``ch`` (fewer if none came
    for ``inactivity`` seconds): a prefetch of ``count``, acknowledged once all came, so
    that none is pending when the consumer is cancelled (pika's cancel nacks those, which
    a stream refuses as RabbitMQ's do)."""
    ch.basic_qos(prefetch_count=count)
    got: list[Delivery] = []
    last = None
    for method, props, body in ch.consume(queue, arguments=arguments,
                                          inactivity_timeout=inactivity):
        if method is None:
            break
        got.append((props, body))
        last = method.delivery_tag
        if len(got) == count:
            break
    ch.cancel()
    if last is not None:
        ch.basic_ack(last, multiple=True)
    return got


def amqp_read(broker: BrokerProcess, queue: str, count: int, inactivity: float = 10.0,
              **arguments: Any) -> list[Delivery]:
    """``deliveries`` on a connection of its own."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        return deliveries(conn.channel(), queue, count, inactivity, **arguments)
    finally:
        conn.close()


def amqp_positions(broker: BrokerProcess, queue: str, count: int) -> dict[tuple[int, int], Delivery]:
    """(partition, offset) -> delivery of the first ``count`` messages of a stream, read
    from ``first``; all ``count`` must come."""
    got = {(props.headers["x-stream-partition"], props.headers["x-stream-offset"]): (props, body)
           for props, body in amqp_read(broker, queue, count, **{"x-stream-offset": "first"})}
    assert len(got) == count
    return got
