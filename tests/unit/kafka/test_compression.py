"""Kafka's batch codecs (queues/kafka_compression.py): each inflates what Kafka's clients
write (kafka-python's encoders, raw snappy as librdkafka writes it), refuses corrupt and
truncated payloads, and stops a bomb at the limit without holding it."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable

import lz4.frame
import pytest
import snappy
import zstandard
from kafka import codec as kafka_codec

from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues import kafka_batch, kafka_compression
from smartbroker.queues.kafka_compression import GZIP, LZ4, SNAPPY, ZSTD, CompressionError, TooLarge
from tests.unit.kafka.batch_builders import refusal, with_records

PAYLOAD = os.urandom(3000) + b"abc" * 100_000  # some incompressible, mostly not
ENCODERS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "gzip": (GZIP, kafka_codec.gzip_encode),
    "snappy-xerial": (SNAPPY, kafka_codec.snappy_encode),
    "snappy-raw": (SNAPPY, snappy.compress),
    "lz4": (LZ4, kafka_codec.lz4_encode),
    "zstd": (ZSTD, kafka_codec.zstd_encode),
}
BOMBS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "gzip": (GZIP, kafka_codec.gzip_encode),
    "lz4": (LZ4, lz4.frame.compress),
    "zstd": (ZSTD, zstandard.ZstdCompressor(level=19).compress),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_round_trip(name: str) -> None:
    kind, encode = ENCODERS[name]
    data = encode(PAYLOAD)
    assert kafka_compression.inflate(kind, data, 1 << 30) == PAYLOAD
    assert kafka_compression.inflated_size(kind, memoryview(data), 1 << 30) == len(PAYLOAD)
    with pytest.raises(TooLarge):
        kafka_compression.inflated_size(kind, data, len(PAYLOAD) - 1)


@pytest.mark.parametrize("name", ENCODERS)
def test_corrupt_and_truncated(name: str) -> None:
    kind, encode = ENCODERS[name]
    data = encode(PAYLOAD)
    for bad in (data[:len(data) // 2], data[:3] + b"\xff" * 40 + data[43:], b"garbage" * 5, b""):
        with pytest.raises(CompressionError):
            kafka_compression.inflate(kind, bad, 1 << 30)


def test_zstd_frames_one_after_another() -> None:
    two = kafka_codec.zstd_encode(b"first ") + kafka_codec.zstd_encode(b"second")
    assert kafka_compression.inflate(ZSTD, two, 100) == b"first second"


def test_snappy_block_claiming_more_than_it_can_hold() -> None:
    claim = bytes([0x80, 0x80, 0x80, 0x80, 0x07]) + b"\x00" * 10  # raw block claiming 1.75 GiB
    with pytest.raises(CompressionError):
        kafka_compression.inflate(SNAPPY, claim, 1 << 31)
    with pytest.raises(TooLarge):  # a block that may hold its claim but is over the limit
        kafka_compression.inflated_size(SNAPPY, snappy.compress(b"\x00" * 100_000), 50_000)


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_stops_at_the_limit_without_holding_it(name: str) -> None:
    kind, encode = BOMBS[name]
    bomb = encode(b"\x00" * (256 << 20))
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            kafka_compression.inflated_size(kind, bomb, 4 << 20)
        with pytest.raises(TooLarge):
            kafka_compression.inflate(kind, bomb, 4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{name}: peak {peak >> 20} MiB"


def compressed_batch(kind: int, encode: Callable[[bytes], bytes], values: list[bytes],
                     count: int | None = None) -> bytes:
    """A batch of ``values`` (keyed, with a header) whose records are ``encode``d."""
    plain = codec.write_batch([(1000 + i, b"k%d" % i, v, [("h", b"x")])
                               for i, v in enumerate(values)])
    return with_records(plain, encode(bytes(plain[61:])), kind,
                        len(values) if count is None else count)


@pytest.mark.parametrize("name", ENCODERS)
def test_produce_checks_and_readers_decode(name: str) -> None:
    kind, encode = ENCODERS[name]
    values = [b"one", b"", b"three" * 50]
    data = compressed_batch(kind, encode, values)
    assert refusal(data) is None
    got = kafka_batch.records(data)
    assert [(off, ts, key, value, headers) for off, ts, key, value, headers in got] == [
        (i, 1000 + i, b"k%d" % i, v, [("h", b"x")]) for i, v in enumerate(values)]
    assert [r.value for r in codec.read_records(data)] == values  # kafka-python agrees
    assert refusal(compressed_batch(kind, encode, values, count=1000)) == ErrorCode.CORRUPT_MESSAGE
    assert refusal(compressed_batch(kind, lambda b: encode(b)[:-7], values)) == \
        ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize("name", BOMBS)
def test_produce_refuses_a_bomb(name: str) -> None:
    kind, encode = BOMBS[name]
    bomb = compressed_batch(kind, lambda _b: encode(b"\x00" * (32 << 20)), [b"x"])
    assert refusal(bomb, limit=1 << 20) == ErrorCode.MESSAGE_TOO_LARGE


def test_ids_kafka_does_not_define_stay_unsupported() -> None:
    for kind in (5, 6, 7):
        data = compressed_batch(kind, lambda b: b, [b"x"])
        assert refusal(data) == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


def test_unreadable_stored_batch_is_skipped_by_readers() -> None:
    data = compressed_batch(LZ4, lambda b: lz4.frame.compress(b)[:-9], [b"x"])
    assert kafka_batch.stored_records(data, 0, 0) == []
