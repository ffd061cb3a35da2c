"""Kafka's murmur2 partitioner (Java ``Utils.murmur2`` vectors, kafka-python cross-check,
spread), the header-key cache's bounds, the legacy rule, and how a stream's rule is chosen
from its directory."""

from __future__ import annotations

import random
from collections import Counter

import mmh3
import pytest

from smartbroker.queues import partitioner
from smartbroker.queues.partitioner import (
    CACHE_ENTRIES,
    LEGACY,
    MURMUR2,
    choose,
    header_key_partition,
    kafka_partition,
    key_bytes,
    legacy_partition,
    murmur2,
    murmur2_u32,
)

kafka_default = pytest.importorskip("kafka.partitioner.default", reason="kafka-python 3.x")

# apache/kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java testMurmur2
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(data, expected):
    assert murmur2(data) == expected
    assert murmur2_u32(data) == expected & 0xFFFFFFFF


def test_murmur2_matches_kafka_python_for_every_tail_length():
    rng = random.Random(14)
    keys = [rng.randbytes(n) for n in range(0, 80) for _ in range(5)]
    keys += [b"", b"\x00", b"\xff" * 7, "clé-ü".encode()]
    for key in keys:
        assert murmur2_u32(key) == kafka_default.murmur2(key), key
        # kafka-python's DefaultPartitioner.partition, for a keyed record
        for n in (1, 2, 3, 4, 7, 12, 1024):
            assert kafka_partition(key, n) == (kafka_default.murmur2(key) & 0x7FFFFFFF) % n


def test_murmur2_accepts_bytearray_and_memoryview():
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482


def test_keys_spread_evenly():
    counts = Counter(kafka_partition(f"user-{i}".encode(), 8) for i in range(16_000))
    assert sorted(counts) == list(range(8))
    assert all(abs(c - 2000) < 200 for c in counts.values()), counts


def test_header_values_hash_as_a_kafka_client_would_hash_the_key():
    for value in ("order-17", "clé", b"\xff\xfe raw"):
        assert header_key_partition(value, 5) == kafka_partition(key_bytes(value), 5)
    assert key_bytes("clé") == "clé".encode()
    assert header_key_partition(42, 5) == kafka_partition(b"42", 5)  # as text, like the legacy rule
    assert header_key_partition(True, 5) == kafka_partition(b"True", 5)
    assert header_key_partition(1, 5) == kafka_partition(b"1", 5)  # True == 1 must not share a slot


def test_unhashable_header_values_do_not_raise():
    assert 0 <= header_key_partition([1, 2], 3) < 3
    assert 0 <= header_key_partition({"a": 1}, 3) < 3


def test_the_cache_is_bounded_in_entries_and_key_size(monkeypatch):
    monkeypatch.setattr(partitioner, "_hashes", {})
    for i in range(CACHE_ENTRIES * 2 + 10):
        header_key_partition(f"key-{i}", 4)
        assert len(partitioner._hashes) <= CACHE_ENTRIES
    partitioner._hashes.clear()
    long_key = "x" * (partitioner.CACHE_KEY_BYTES + 1)
    assert header_key_partition(long_key, 4) == kafka_partition(long_key.encode(), 4)
    assert long_key not in partitioner._hashes
    header_key_partition("short", 4)
    assert partitioner._hashes == {"short": murmur2_u32(b"short")}


def test_legacy_rule_is_the_seeded_mmh3_of_before():
    for key in ("k1", "device.7", b"raw"):
        assert legacy_partition(key, 5) == mmh3.hash(key, seed=104729, signed=False) % 5
    assert legacy_partition("anything", 1) == 0


# --------------------------------------------------------------------------- the choice


def test_a_stream_in_memory_is_new():
    assert choose(None, fsync=False) == MURMUR2


def test_a_new_directory_records_murmur2(tmp_path):
    assert choose(tmp_path, fsync=True) == MURMUR2
    assert (tmp_path / "partitioner").read_text() == "murmur2\n"
    assert not (tmp_path / "partitioner.tmp").exists()
    (tmp_path / "p0").mkdir()  # logs written since: the record, not their presence, decides
    assert choose(tmp_path, fsync=False) == MURMUR2


def test_logs_without_a_record_were_written_before_and_stay_legacy(tmp_path):
    (tmp_path / "p0").mkdir()
    assert choose(tmp_path, fsync=False) == LEGACY
    assert (tmp_path / "partitioner").read_text() == "legacy\n"  # recorded from now on
    assert choose(tmp_path, fsync=False) == LEGACY
