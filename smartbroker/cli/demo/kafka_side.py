"""The Kafka side of the log setup: a Kafka consumer reads the stream AMQP just wrote.

A stream queue is a topic, so after the AMQP services are done a Kafka client (kafka-python,
a dependency of the broker) assigns itself every partition of the same stream and reads
it from the beginning, no group, no commits. It looks for the poison event the AMQP
billing service met and reports where it found it: the partition and offset are the same
numbers the AMQP delivery carried in ``x-stream-partition`` / ``x-stream-offset``, and the
record key is the ``x-message-key`` the AMQP publisher set.

kafka-python is used here as a client, as the demo uses aio-pika: the broker's own
Kafka code still reaches the library only through ``smartbroker/kafka/codec.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

TIMEOUT = 60.0


@dataclass
class KafkaRead:
    """What the Kafka consumer saw."""

    count: int = 0
    seconds: float = 0.0
    poison: tuple[int, int] | None = None  # (partition, offset) of the NaN event
    poison_key: str | None = None
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def read_over_kafka(bootstrap: str, topic: str, n: int,
                    connect_timeout_ms: int = 10_000) -> KafkaRead:
    """Read ``n`` records of ``topic`` from offset 0 of every partition (blocking; run it
    in a thread). Errors become ``KafkaRead.error``: the demo reports them, not crash."""
    try:
        from kafka import KafkaConsumer, TopicPartition
    except ImportError as exc:  # pragma: no cover - kafka-python is a dependency
        return KafkaRead(error=f"kafka-python not importable: {exc}")
    out = KafkaRead()
    consumer = None
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 request_timeout_ms=15_000, client_id="smartbroker-demo",
                                 bootstrap_timeout_ms=connect_timeout_ms)
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + 15
        while not parts and time.monotonic() < deadline:  # metadata arrives asynchronously
            consumer.poll(timeout_ms=100)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return KafkaRead(error=f"no topic {topic!r} in the Kafka metadata of {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        start = time.perf_counter()
        deadline = time.monotonic() + TIMEOUT
        while out.count < n and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                for r in records:
                    out.count += 1
                    if out.poison is None and b'"NaN"' in (r.value or b""):
                        out.poison = (tp.partition, r.offset)
                        out.poison_key = r.key.decode() if r.key is not None else None
        out.seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a demo row, not a traceback
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        if consumer is not None:
            consumer.close()
    return out


def describe(read: KafkaRead, n: int, amqp_poison: tuple[int, int] | None,
             amqp_key: str | None) -> str:
    """The table cell: how much the Kafka consumer read and whether the positions agree."""
    if read.error is not None:
        return f"not shown: {read.error}"
    text = f"{read.count:,} of {n:,} records read over Kafka ({read.rate:,.0f}/s)"
    if read.poison is None:
        return text + "; the poison event was not among them"
    p, o = read.poison
    same = read.poison == amqp_poison
    text += (f"; the poison event is at partition {p}, offset {o} with key {read.poison_key}: "
             + ("the same partition, offset and key (x-message-key) the AMQP delivery carried"
                if same and read.poison_key == amqp_key else
                f"AMQP saw {amqp_poison} with key {amqp_key}"))
    return text
