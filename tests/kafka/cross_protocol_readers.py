"""Read every record of a topic from the beginning with each Kafka client, as one shape:
(partition, offset, key, value, headers, timestamp_ms), sorted by partition and offset.
Shared by the cross-protocol, compaction and durability tests, which compare what the
clients see with each other and with what AMQP readers see."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest

Record = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]


def kafka_python_records(bootstrap: str, topic: str, partitions: int, count: int,
                         timeout: float = 20.0) -> list[Record]:
    kafka = pytest.importorskip("kafka")
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                   auto_offset_reset="earliest")
    got: list[Record] = []
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.partition, r.offset, r.key, r.value,
                            tuple((k, v) for k, v in r.headers), r.timestamp) for r in records)
    finally:
        consumer.close()
    return sorted(got)


def confluent_records(bootstrap: str, topic: str, partitions: int, count: int,
                      timeout: float = 20.0, **config: Any) -> list[Record]:
    ck = pytest.importorskip("confluent_kafka")
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"x-{uuid.uuid4().hex}",
                            "enable.auto.commit": False, **config})
    got: list[Record] = []
    try:
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                         for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.partition(), msg.offset(), msg.key(), msg.value(),
                        tuple(msg.headers() or ()), msg.timestamp()[1]))
    finally:
        consumer.close()
    return sorted(got)


def aiokafka_records(bootstrap: str, topic: str, partitions: int, count: int,
                     timeout: float = 20.0) -> list[Record]:
    aiokafka = pytest.importorskip("aiokafka")

    async def read() -> list[Record]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                             enable_auto_commit=False,
                                             auto_offset_reset="earliest")
        await consumer.start()
        got: list[Record] = []
        try:
            tps = [aiokafka.TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.extend((r.partition, r.offset, r.key, r.value, tuple(r.headers),
                                r.timestamp) for r in records)
        finally:
            await consumer.stop()
        return sorted(got)

    return asyncio.run(read())


KCAT_FORMAT = "%p\\t%o\\t%k\\t%T\\t%h\\t%s\\n"


def kcat_lines(bootstrap: str, topic: str, timeout: float = 30.0) -> list[list[str]]:
    """kcat -C from the beginning to the end with ``KCAT_FORMAT``: one list of fields
    (partition, offset, key, timestamp, headers, value) per record, sorted."""
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                          "-q", "-f", KCAT_FORMAT], capture_output=True, timeout=timeout,
                         check=True).stdout.decode(errors="backslashreplace")
    rows = [line.split("\t") for line in out.splitlines() if line]
    return sorted(rows, key=lambda r: (int(r[0]), int(r[1])))
