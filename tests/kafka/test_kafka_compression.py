"""snappy, lz4 and zstd batches from real producers (confluent-kafka's compression.type,
kafka-python's compression_type): stored and served as sent (a Fetch returns batches with
the producer's codec), read back the same by both Kafka clients, and decoded for AMQP
readers (bodies, keys, headers); a compacted lz4 topic keeps the newest value per key; a
zstd or lz4 bomb is MESSAGE_TOO_LARGE without the broker's memory growing by it; corrupt
or truncated compressed records are CORRUPT_MESSAGE, with no traceback in the log."""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import lz4.frame
import pytest
import snappy
import zstandard
from kafka import codec as kafka_codec
from kafka.protocol import admin
from test_kafka_abuse_produce import peak_rss, recrc

from tests.conftest import BrokerProcess
from tests.kafka.amqp_streams import amqp_read
from tests.kafka.cross_protocol_readers import confluent_records, kafka_python_records
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.kafka_producers import confluent_produce
from tests.kafka.raw_client import Raw, batch, fetch, healthy, mark, produce, quiet

CODECS = {"snappy": 2, "lz4": 3, "zstd": 4}
CORRUPT_MESSAGE, MESSAGE_TOO_LARGE = 2, 10
COUNT = 40
Produced = list[tuple[int, bytes, bytes, tuple[tuple[str, bytes], ...]]]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-codecs-") as proc:
        yield proc


def record(i: int) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    """Key, value (compressible, a few KiB for some) and headers of record ``i``."""
    return (b"key-%d" % (i % 7), b"value %d " % i * (3 if i % 5 else 400),
            (("n", b"%d" % i), ("trace", b"t-%d" % i)))


def produce_confluent(broker: BrokerProcess, topic: str, compression: str) -> Produced:
    records = [record(i) for i in range(COUNT)]
    landed = confluent_produce(broker, topic, records, partition=0, **{
        "acks": "all", "compression.type": compression, "linger.ms": 50,
        "message.send.max.retries": 0})
    return [(offset, *rec) for (_, offset), rec in zip(landed, records, strict=True)]


def produce_kafka_python(broker: BrokerProcess, topic: str, compression: str) -> Produced:
    kafka = pytest.importorskip("kafka")
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all",
                                   compression_type=compression, linger_ms=50,
                                   enable_idempotence=False)
    try:
        futures = [producer.send(topic, key=record(i)[0], value=record(i)[1],
                                 headers=list(record(i)[2]), partition=0) for i in range(COUNT)]
        producer.flush(timeout=30)
        return [(f.get(timeout=30).offset, *record(i)) for i, f in enumerate(futures)]
    finally:
        producer.close(timeout=10)


def stored_codecs(broker: BrokerProcess, topic: str, end: int) -> list[int]:
    """The compression of every batch a Fetch serves, from offset 0 to ``end``."""
    seen: list[int] = []
    offset = 0
    with Raw(broker.kafka_port) as raw:
        while offset < end:
            data = bytes(fetch(raw, topic, offset).records)
            pos = 0
            while pos + 61 <= len(data):
                base, length = struct.unpack_from(">qi", data, pos)
                if pos + 12 + length > len(data):
                    break
                (attributes,) = struct.unpack_from(">h", data, pos + 21)
                (last_delta,) = struct.unpack_from(">i", data, pos + 23)
                seen.append(attributes & 7)
                offset = base + last_delta + 1
                pos += 12 + length
    return seen


PRODUCERS: dict[str, Callable[[BrokerProcess, str, str], Produced]] = {
    "confluent": produce_confluent, "kafka-python": produce_kafka_python}


@pytest.mark.parametrize("client", PRODUCERS)
@pytest.mark.parametrize("compression", CODECS)
def test_codec_round_trip(broker: BrokerProcess, compression: str, client: str) -> None:
    since = mark(broker)
    topic = f"codec-{compression}-{client}-{uuid.uuid4().hex[:8]}"
    produced = PRODUCERS[client](broker, topic, compression)
    assert [p[0] for p in produced] == list(range(COUNT))
    codecs = stored_codecs(broker, topic, COUNT)
    assert codecs and set(codecs) == {CODECS[compression]}, codecs  # served as the client sent
    want = [(0, o, k, v, h) for o, k, v, h in produced]
    for reader in (kafka_python_records, confluent_records):
        got = reader(broker.kafka_bootstrap, topic, 1, COUNT)
        assert [r[:5] for r in got] == want, reader.__name__
    got_amqp = amqp_read(broker, topic, COUNT, **{"x-stream-offset": "first"})
    assert [(p.headers["x-stream-offset"], p.headers["x-message-key"].encode(), body,
             p.headers["n"].encode(), p.headers["trace"].encode()) for p, body in got_amqp] == [
        (o, k, v, h[0][1], h[1][1]) for o, k, v, h in produced]
    quiet(broker, since)


@pytest.mark.extension
def test_compacted_lz4_topic(broker: BrokerProcess) -> None:
    """Compaction decodes lz4 batches: the newest value of each key stays at its offset,
    for Kafka and AMQP readers."""
    kafka = pytest.importorskip("kafka")
    topic = f"compact-lz4-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        CT = admin.CreateTopicsRequest
        assert raw.call(CT, 4, topics=[CT.CreatableTopic(
            name=topic, num_partitions=1, replication_factor=1, assignments=[],
            configs=[CT.CreatableTopic.CreatableTopicConfig(name=n, value=v) for n, v in (
                ("cleanup.policy", "compact"), ("segment.bytes", "4096"))])],
            timeout_ms=10000, validate_only=False).topics[0].error_code == 0
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all",
                                   compression_type="lz4", linger_ms=20,
                                   enable_idempotence=False)
    newest: dict[bytes, tuple[int, bytes]] = {}
    try:
        for _round in range(6):  # random hex values: lz4 cannot shrink them, segments fill
            values = {b"key-%d" % k: os.urandom(150).hex().encode() for k in range(5)}
            futures = {k: producer.send(topic, key=k, value=v) for k, v in values.items()}
            producer.flush(timeout=30)
            newest.update((k, (f.get(timeout=30).offset, values[k])) for k, f in futures.items())
        pads = [producer.send(topic, key=b"pad-%d" % i, value=os.urandom(150).hex().encode())
                for i in range(30)]
        producer.flush(timeout=30)
        want = {o for o, _ in newest.values()} | {f.get(timeout=30).offset for f in pads}
    finally:
        producer.close(timeout=10)
    deadline = time.monotonic() + 30
    while True:  # the cleaner runs every second
        got = kafka_python_records(broker.kafka_bootstrap, topic, 1, len(want), timeout=5)
        if {r[1] for r in got} == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_offset = {r[1]: r for r in got}
    assert set(by_offset) == want
    for key, (offset, value) in newest.items():
        assert by_offset[offset][2:4] == (key, value)
    amqp = {p.headers["x-stream-offset"]: (p.headers["x-message-key"], body)
            for p, body in amqp_read(broker, topic, len(want), **{"x-stream-offset": "first"})}
    assert set(amqp) == want
    assert all(amqp[o] == (k.decode(), v) for k, (o, v) in newest.items())


def compressed(body: bytes, compression: int, count: int = 1, key: bytes | None = None) -> bytes:
    """A batch of ``count`` records whose compressed records are ``body``, CRC right."""
    head = bytearray(batch([b"x"], key=key)[:61])
    struct.pack_into(">h", head, 21, compression)
    struct.pack_into(">i", head, 23, count - 1)
    struct.pack_into(">i", head, 57, count)
    out = bytearray(head + body)
    struct.pack_into(">i", out, 8, len(out) - 12)
    return recrc(out)


def zeros_lz4(mib: int) -> bytes:
    frame = lz4.frame.LZ4FrameCompressor()
    chunk = b"\x00" * (1 << 20)
    return frame.begin() + b"".join(frame.compress(chunk) for _ in range(mib)) + frame.flush()


def zeros_zstd(mib: int) -> bytes:
    zc = zstandard.ZstdCompressor(level=19).compressobj()
    chunk = b"\x00" * (1 << 20)
    return b"".join(zc.compress(chunk) for _ in range(mib)) + zc.flush()


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_bomb_is_message_too_large_without_rss_growth(broker: BrokerProcess,
                                                      compression: str) -> None:
    """1 GiB of zeros in ~4 MiB of lz4 (a few KiB of zstd): over max_message_size once
    inflated; the broker inflates it a step at a time and drops it."""
    since = mark(broker)
    topic = f"bomb-{compression}-{uuid.uuid4().hex[:8]}"
    body = zeros_lz4(1024) if compression == "lz4" else zeros_zstd(1024)
    bomb = compressed(body, CODECS[compression], count=1000)
    with Raw(broker.kafka_port, timeout=60) as raw:
        assert produce_to_new(raw, topic, batch([b"before"])).error_code == 0
        peak0 = peak_rss(broker)
        started = time.monotonic()
        assert produce(raw, topic, bomb).error_code == MESSAGE_TOO_LARGE
        took = time.monotonic() - started
        growth = peak_rss(broker) - peak0
        assert produce(raw, topic, batch([b"after"])).error_code == 0
    print(f"{compression} bomb of {len(bomb) >> 10} KiB (1 GiB inflated): MESSAGE_TOO_LARGE in "
          f"{took:.2f} s, peak RSS growth {growth >> 20} MiB")
    assert growth < 64 << 20, f"peak RSS grew {growth >> 20} MiB"
    healthy(broker)
    quiet(broker, since)


def produce_to_new(raw: Raw, topic: str, data: bytes) -> Any:
    """Produce to a topic auto-created by it: LEADER_NOT_AVAILABLE (5) while the broker
    throttles creation on a busy machine is retried, as clients do."""
    deadline = time.monotonic() + 10
    while (part := produce(raw, topic, data)).error_code == 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    return part


def cut(data: bytes) -> bytes:
    return data[:len(data) // 2]


def flipped(data: bytes) -> bytes:
    """The framing damaged (magic, lengths, headers). Damage inside raw snappy's literals
    inflates without error (no checksum) and, as for uncompressed records whose CRC the
    sender recomputed, is stored: AMQP readers skip records that do not parse."""
    return bytes(b ^ 0x5A for b in data[:20]) + data[20:]


ENCODE = {"snappy": kafka_codec.snappy_encode, "snappy-raw": snappy.compress,
          "lz4": kafka_codec.lz4_encode, "zstd": kafka_codec.zstd_encode}


@pytest.mark.parametrize("damage", [cut, flipped])
@pytest.mark.parametrize("name", ENCODE)
def test_corrupt_compressed_records(broker: BrokerProcess, name: str,
                                    damage: Callable[[bytes], bytes]) -> None:
    since = mark(broker)
    topic = f"corrupt-{uuid.uuid4().hex[:8]}"
    records = batch([os.urandom(64).hex().encode() * 20 for _ in range(5)])[61:]
    data = compressed(damage(ENCODE[name](records)), CODECS[name.split("-")[0]], count=5)
    with Raw(broker.kafka_port) as raw:
        assert produce_to_new(raw, topic, data).error_code == CORRUPT_MESSAGE
        assert produce(raw, topic, batch([b"after"])).error_code == 0
    healthy(broker)
    quiet(broker, since)
