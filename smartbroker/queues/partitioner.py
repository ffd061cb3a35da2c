"""Which partition of a stream a key goes to, and which rule a stream uses.

Two rules exist:

* ``murmur2`` (streams created since issue 14): a message with an ``x-message-key`` header
  goes to ``(murmur2(key) & 0x7fffffff) % partitions``, Kafka's default partitioner (the
  Java client's ``Utils.murmur2``, kafka-python's, aiokafka's, librdkafka's
  ``murmur2_random``), so a key lands in the same partition whether AMQP or a Kafka client
  published it. A message without the header has no Kafka key; what a Kafka producer does
  then (sticky or random) is the client's choice, so such messages keep the routing-key
  rule below, as before.
* ``legacy`` (streams created before): ``mmh3(key, seed 104729) % partitions``, the key
  being the header, else the routing key. Moving a key to another partition would break
  per-key order for data already written, so those streams keep it.

Where the choice is kept: a ``partitioner`` file in the stream's own directory, written
when the directory is created (``choose``), not a queue argument. The choice belongs to
the data: the file goes when the stream's directory is deleted, and a data directory
written before this change has partition logs but no such file, which is exactly what
marks it ``legacy``. A queue argument would show in ``queue.declare``'s equivalence checks,
the management API and definitions exports, none of which RabbitMQ would show, and an
exported definition imported elsewhere creates a new, empty stream, which should get the
new rule. Streams without storage (in memory) are always new.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import mmh3

from smartbroker.store.pathsync import write_new

MURMUR2 = "murmur2"
LEGACY = "legacy"
PARTITIONERS = (MURMUR2, LEGACY)
FILE_NAME = "partitioner"

LEGACY_SEED = 104729  # the super-stream hash of RabbitMQ stream clients
_SEED = 0x9747B28C  # Kafka's Utils.murmur2
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORD = struct.Struct("<I")

# header value -> murmur2 of its bytes. Bounded (entries and key size) and emptied whole
# when full: keys usually repeat (users, devices), and a hit (~0.05 µs) saves the hash
# (~1.3 µs for 16 bytes) and the str -> bytes encode.
CACHE_ENTRIES = 4096
CACHE_KEY_BYTES = 64
_hashes: dict[str | bytes, int] = {}


def murmur2_u32(data: bytes) -> int:
    """Kafka's murmur2 as an unsigned 32-bit value (the arithmetic is the Java code's with
    every product masked to 32 bits; ``k >>> 24`` is a plain shift of the masked value).
    Inlined, one loop over little-endian words: this runs once per keyed publish."""
    length = len(data)
    h = _SEED ^ length
    end = length & ~3
    for (k,) in _WORD.iter_unpack(data if end == length else memoryview(data)[:end]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[end + 2] << 16
        if rest >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2(byte[])``: a signed 32-bit int, as Java returns it."""
    h = murmur2_u32(data)
    return h - 0x100000000 if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: ``toPositive(murmur2(key)) % n``."""
    return (murmur2_u32(key) & 0x7FFFFFFF) % partitions


def key_bytes(value: Any) -> bytes:
    """The bytes a Kafka client would have hashed for an ``x-message-key`` header value:
    a string's UTF-8, bytes as they are, anything else as its text."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        value = str(value)
    return value.encode("utf-8", "surrogatepass")


def header_key_partition(value: Any, partitions: int) -> int:
    """``kafka_partition`` of an ``x-message-key`` header value, through the bounded cache
    (only str and bytes are cached: other values may be unhashable, or equal across types,
    like ``True == 1``, while their text differs)."""
    kind = type(value)
    if kind is str or kind is bytes:
        h = _hashes.get(value)
        if h is None:
            data = key_bytes(value)
            h = murmur2_u32(data)
            if len(data) <= CACHE_KEY_BYTES:
                if len(_hashes) >= CACHE_ENTRIES:
                    _hashes.clear()
                _hashes[value] = h
    else:
        h = murmur2_u32(key_bytes(value))
    return (h & 0x7FFFFFFF) % partitions


def legacy_partition(key: str | bytes, partitions: int) -> int:
    """The rule of streams created before issue 14 (and of unkeyed messages since)."""
    if partitions == 1:
        return 0
    return mmh3.hash(key, seed=LEGACY_SEED, signed=False) % partitions


def choose(directory: Path | None, *, fsync: bool, unsynced: list[Path] | None = None) -> str:
    """The partitioner of the stream stored in ``directory`` (None: in memory, new).

    Call before the partition logs are opened: a directory with a ``p0`` log but no
    ``partitioner`` file was written before this change and is recorded as ``legacy``;
    otherwise the stream is new and gets ``murmur2``. The file is written atomically
    (and fsynced unless the broker never fsyncs), so a restart sees the same answer;
    given ``unsynced``, the fsync is left to the caller (the path is appended to it)."""
    if directory is None:
        return MURMUR2
    path = directory / FILE_NAME
    try:
        recorded = path.read_text().strip()
    except FileNotFoundError:
        recorded = ""
    if recorded in PARTITIONERS:
        return recorded
    chosen = LEGACY if (directory / "p0").exists() else MURMUR2
    if unsynced is not None:  # in place: a torn file reads as missing, and is chosen again
        write_new(path, (chosen + "\n").encode())  # the same way (p0 exists or not yet)
        unsynced.append(path)
    else:
        _write_atomically(path, chosen + "\n", fsync)
    return chosen


def _write_atomically(path: Path, text: str, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
