"""AMQP publishes to a stream use Kafka's murmur2 partitioner for ``x-message-key`` (the
partition a Kafka client would pick, checked against kafka-python's own partitioner), and a
stream whose data was written before keeps its legacy rule across restarts (smartbroker)."""

from __future__ import annotations

from pathlib import Path

import mmh3
import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2
from stream_helpers import SEED, declare_stream, publish, read_all

from tests.integration.helpers import connect

pytestmark = pytest.mark.extension

KEYS = [f"order-{i}" for i in range(48)] + ["clé-ü", "", "x" * 70]


def kafka_python_partition(key: str, partitions: int) -> int:
    """kafka-python's DefaultPartitioner for a keyed record (serialized as UTF-8)."""
    return (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def read_partitions(url: str, queue: str, expected: dict[str, int], partitions: int) -> dict[str, int]:
    """Read each partition on its own (``x-stream-partition``) for as many messages as
    ``expected`` puts there: body -> the partition it was read from. Every body read once
    over all partitions proves the placement (a partition short of messages times out)."""
    where: dict[str, int] = {}
    for p in range(partitions):
        n = sum(1 for q in expected.values() if q == p)
        for g in read_all(url, queue, n, args={"x-stream-partition": p}) if n else ():
            assert g.partition == p and g.text not in where
            where[g.text] = p
    return where


def test_keys_land_in_kafka_pythons_partition(ch, stream, broker_url):
    q = stream(partitions=4)
    bodies = [f"{k}|{i}" for i, k in enumerate(KEYS)]
    publish(ch, q, bodies, headers=lambda i: {"x-message-key": KEYS[i]})
    expected = {b: kafka_python_partition(k, 4) for b, k in zip(bodies, KEYS, strict=True)}
    assert set(expected.values()) == {0, 1, 2, 3}
    assert read_partitions(broker_url, q, expected, 4) == expected


def stream_dir(data_dir: Path, queue: str) -> Path:
    """The stream's directory, found by the ``name`` file the broker writes in it."""
    found = [f.parent for f in data_dir.rglob("streams/*/name")
             if f.read_text().splitlines()[1:2] == [queue]]
    assert len(found) == 1, found
    return found[0]


def keyed_partitions(url: str, queue: str, tag: str, n_before: int) -> dict[str, int]:
    """Publish one message per key; key -> the partition it landed in."""
    with connect(url) as c:
        publish(c.channel(), queue, [f"{tag}|{k}" for k in KEYS],
                headers=lambda i: {"x-message-key": KEYS[i]})
    got = read_all(url, queue, n_before + len(KEYS))
    return {g.text.split("|", 1)[1]: g.partition for g in got if g.text.startswith(tag + "|")}


def test_a_stream_written_before_keeps_its_partitioner_across_restarts(own_broker):
    old, new = "legacy-stream", "new-stream"
    with connect(own_broker.url) as c:
        ch = c.channel()
        declare_stream(ch, old, partitions=4)
        declare_stream(ch, new, partitions=4)
    keyed_partitions(own_broker.url, old, "a", 0)
    own_broker.stop()
    # what a data directory written before this change looks like: logs, no recorded rule
    (stream_dir(own_broker.data_dir, old) / "partitioner").unlink()
    own_broker.start()
    legacy = {k: mmh3.hash(k, seed=SEED, signed=False) % 4 for k in KEYS}
    assert keyed_partitions(own_broker.url, old, "b", len(KEYS)) == legacy
    assert keyed_partitions(own_broker.url, new, "b", 0) == {k: kafka_python_partition(k, 4) for k in KEYS}
    own_broker.restart()
    assert keyed_partitions(own_broker.url, old, "c", 2 * len(KEYS)) == legacy
    assert keyed_partitions(own_broker.url, new, "c", len(KEYS)) == {
        k: kafka_python_partition(k, 4) for k in KEYS}
    with connect(own_broker.url) as c:  # redeclaring with the original arguments is fine
        ok = declare_stream(c.channel(), old, partitions=4)
        assert ok.method.queue == old
