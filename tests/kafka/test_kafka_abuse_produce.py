"""Hostile Produce requests on a real broker's Kafka port: batches whose CRC, record count,
length or varints lie, 100k tiny records, unknown compression, 10k topics that do not
exist (bounded by the vhost's max-queues), huge header counts. (A join storm and the rest:
test_kafka_abuse.py.)
Each gets Kafka's error (or is stored as sent where the broker checks headers only, see
kafka/batches.py), nothing reaches the log as ERROR or a traceback, AMQP readers of the
stream survive what was stored, and another client keeps working in the same test.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from kafka.protocol import admin, metadata, producer
from kafka.record.util import calc_crc32c

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.raw_client import Raw, batch, fetch, healthy, mark, produce, quiet

CORRUPT_MESSAGE, UNKNOWN_TOPIC, INVALID_RECORD, UNSUPPORTED_COMPRESSION = 2, 3, 87, 76
LEADER_NOT_AVAILABLE = 5


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-abuse-produce-") as proc:
        yield proc


def recrc(data: bytes | bytearray) -> bytes:
    """The batch with its length and CRC-32C made right again (so a lie inside the records
    gets past the header checks)."""
    buf = bytearray(data)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def patched(data: bytes, at: int, fmt: str, value: int, fix_crc: bool = True) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, at, value)
    return recrc(buf) if fix_crc else bytes(buf)


def amqp_reads_until(broker: BrokerProcess, queue: str, last: bytes) -> list[bytes]:
    """An AMQP stream reader from the first offset reads up to the message ``last`` (the
    stream's newest), acking each, its channel still open: what the broker could not
    decode is skipped, not fatal. (Stopping before the end would nack what pika holds,
    which a stream refuses.)"""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        got: list[bytes] = []
        for method, _p, body in ch.consume(queue, arguments={"x-stream-offset": "first"},
                                           inactivity_timeout=10):
            assert method is not None, f"{last!r} not delivered after {len(got)} messages"
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if body == last:
                break
        assert ch.is_open
        ch.cancel()
        return got
    finally:
        conn.close()


# -- lying batches ----------------------------------------------------------------------------


def test_bad_crc_is_corrupt_message(broker: BrokerProcess) -> None:
    since = mark(broker)
    topic = f"crc-{uuid.uuid4().hex[:8]}"
    good = batch([b"a", b"b"])
    with Raw(broker.kafka_port) as raw:
        assert produce(raw, topic, patched(good, 17, ">I", 0xDEADBEEF, fix_crc=False)).error_code \
            == CORRUPT_MESSAGE
        flipped = good[:-2] + bytes([good[-2] ^ 0x40]) + good[-1:]  # a bit of the last value
        assert produce(raw, topic, flipped).error_code == CORRUPT_MESSAGE
        assert produce(raw, topic, good).error_code == 0  # the same connection goes on
    healthy(broker)
    quiet(broker, since)


@pytest.mark.parametrize("case", ["count-only", "length-over", "length-under", "truncated",
                                  "magic", "empty"])
def test_lying_headers_are_refused(broker: BrokerProcess, case: str) -> None:
    since = mark(broker)
    topic = f"lie-{case}-{uuid.uuid4().hex[:8]}"
    good = batch([b"a", b"b", b"c"])
    bad = {
        "count-only": patched(good, 57, ">i", 1000),  # lastOffsetDelta still says 3
        "length-over": patched(good, 8, ">i", len(good) + 100, fix_crc=False),
        "length-under": patched(good, 8, ">i", 20, fix_crc=False),
        "truncated": good[:40],
        "magic": patched(good, 16, ">b", 7, fix_crc=False),
        "empty": patched(patched(good, 57, ">i", 0), 23, ">i", -1),
    }[case]
    with Raw(broker.kafka_port) as raw:
        code = produce(raw, topic, bad).error_code
        assert code in (CORRUPT_MESSAGE, INVALID_RECORD), code
        assert produce(raw, topic, good).error_code == 0
    healthy(broker)
    quiet(broker, since)


def zigzag(n: int) -> bytes:
    v, out = (n << 1) ^ (n >> 63), bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(out + bytes([v]))


def offset_delta_lie(delta: int) -> bytes:
    """One record whose offset delta says ``delta`` (readers compute base + delta)."""
    one = batch([b"od"])
    body = one[62:]  # after the record's one-byte length: attributes, timestamp delta, ...
    assert body[2] == 0  # ... and the offset delta 0, one byte each
    body = body[:2] + zigzag(delta) + body[3:]
    return recrc(one[:61] + zigzag(len(body)) + body)


def _one_record_claiming(n: int) -> bytes:
    """One real record in a batch whose header (count and lastOffsetDelta, CRC right)
    claims ``n``: the header check cannot tell (Kafka iterates the records and refuses)."""
    return patched(patched(batch([b"only"]), 23, ">i", n - 1), 57, ">i", n)


def test_consistent_header_lies_and_bad_varints_do_not_hurt_readers(broker: BrokerProcess) -> None:
    """Batches whose header and CRC are right but whose records lie: a count of 1000 over
    one record, a record length varint of ten 0xff bytes, a header count of 2^31-1. The
    broker stores them or refuses them with CORRUPT_MESSAGE/INVALID_RECORD; either way a
    Kafka fetch and an AMQP reader of the stream go on to the good record after them."""
    since = mark(broker)
    topic = f"varint-{uuid.uuid4().hex[:8]}"
    one = batch([b"x"])
    head = 61  # the first record's length varint
    huge_varint = recrc(one[:head] + b"\xff" * 10 + b"\x01" + one[head + 1:])
    rec = bytearray(batch([b"h"]))
    rec[-1] = 0  # the record's header count (varint 0) is the last byte ...
    many_headers = recrc(bytes(rec[:-1]) + b"\xfe\xff\xff\xff\x0f")  # ... now 2^31-1
    codes = {}
    with Raw(broker.kafka_port) as raw:
        for name, data in [("count", _one_record_claiming(1000)),
                           ("count-max", _one_record_claiming(2**31 - 1)), ("varint", huge_varint),
                           ("headers", many_headers), ("delta-huge", offset_delta_lie(2**40)),
                           ("delta-negative", offset_delta_lie(-(2**40)))]:
            codes[name] = produce(raw, topic, data).error_code
            assert codes[name] in (0, CORRUPT_MESSAGE, INVALID_RECORD), codes
        good = produce(raw, topic, batch([b"after-the-lies"]))
        assert good.error_code == 0
        seen = fetch(raw, topic, 0)
        assert seen.error_code == 0 and b"after-the-lies" in bytes(
            fetch(raw, topic, good.base_offset).records)
    print("codes for consistent lies:", codes)
    assert amqp_reads_until(broker, topic, b"after-the-lies")
    healthy(broker)
    quiet(broker, since)


def test_compacted_topic_refuses_unparsable_records(broker: BrokerProcess) -> None:
    since = mark(broker)
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        CT = admin.CreateTopicsRequest
        resp = raw.call(CT, 4, topics=[CT.CreatableTopic(
            name=topic, num_partitions=1, replication_factor=1, assignments=[],
            configs=[CT.CreatableTopic.CreatableTopicConfig(name="cleanup.policy",
                                                            value="compact")])],
            timeout_ms=10000, validate_only=False)
        assert resp.topics[0].error_code == 0, resp
        keyed = batch([b"v"], key=b"k")
        liar = recrc(keyed[:61] + b"\xff" * 10 + b"\x01" + keyed[62:])
        assert produce(raw, topic, liar).error_code == CORRUPT_MESSAGE
        assert produce(raw, topic, _one_record_claiming(50)).error_code in (
            CORRUPT_MESSAGE, INVALID_RECORD)
        assert produce(raw, topic, keyed).error_code == 0
    healthy(broker)
    quiet(broker, since)


@pytest.mark.parametrize("codec_id", [2, 3, 4, 5, 6, 7])
def test_compression_the_broker_cannot_read(broker: BrokerProcess, codec_id: int) -> None:
    """Records claimed to be snappy/lz4/zstd (2-4) that are not: CORRUPT_MESSAGE; ids Kafka
    does not define (5-7): UNSUPPORTED_COMPRESSION_TYPE (76)."""
    since = mark(broker)
    topic = f"codec-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        data = patched(batch([b"z"]), 21, ">h", codec_id)
        assert produce(raw, topic, data).error_code in (UNSUPPORTED_COMPRESSION, CORRUPT_MESSAGE)
    healthy(broker)
    quiet(broker, since)


def test_gzip_bomb_is_not_inflated_whole(broker: BrokerProcess) -> None:
    """A gzip batch of ~100 KiB that inflates to ~100 MiB of records: stored (Kafka takes
    gzip), and an AMQP reader of the stream must not make the broker inflate it all at once
    beyond max_message_size nor die (RSS bounded, still serving)."""
    since = mark(broker)
    topic = f"bomb-{uuid.uuid4().hex[:8]}"
    inner = batch([b"\x00" * (1 << 20)] * 96)  # 96 records of 1 MiB zeros
    body = gzip.compress(inner[61:], 9)
    header = bytearray(inner[:61])
    struct.pack_into(">h", header, 21, 1)  # gzip
    bomb = bytearray(header + body)
    struct.pack_into(">i", bomb, 8, len(bomb) - 12)
    bomb_b = recrc(bomb)
    with Raw(broker.kafka_port, timeout=60) as raw:
        code = produce(raw, topic, bomb_b).error_code
        assert code in (0, CORRUPT_MESSAGE, INVALID_RECORD), code
        assert produce(raw, topic, batch([b"after-bomb"])).error_code == 0
    rss0 = broker.rss() or 0
    assert amqp_reads_until(broker, topic, b"after-bomb")
    print(f"gzip bomb: produce code {code}, RSS growth {((broker.rss() or 0) - rss0) >> 20} MiB")
    healthy(broker)
    quiet(broker, since)


def peak_rss(broker: BrokerProcess) -> int:
    """The broker's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{broker.proc.pid}/status") as f:  # type: ignore[union-attr]
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def big_bomb(mib: int, key: bytes | None = None) -> bytes:
    """A gzip batch of ``mib`` records of 1 MiB of zeros (about 1000:1), compressed in a
    stream so the test never holds it inflated."""
    one = batch([b"\x00" * (1 << 20)], key=key)
    record = one[61:]  # offset delta 0 in each: the header's count is what readers trust
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = b"".join(deflater.compress(record) for _ in range(mib)) + deflater.flush()
    head = bytearray(one[:61])
    struct.pack_into(">h", head, 21, 1)  # gzip
    struct.pack_into(">i", head, 23, mib - 1)  # lastOffsetDelta
    struct.pack_into(">i", head, 57, mib)  # record count
    out = bytearray(head + body)
    struct.pack_into(">i", out, 8, len(out) - 12)
    return recrc(out)


@pytest.mark.parametrize("compacted", [False, True], ids=["stream", "compacted"])
def test_gzip_bomb_of_half_a_gibibyte(broker: BrokerProcess, compacted: bool) -> None:
    """~600 KiB of gzip inflating to 512 MiB: a compacted topic decodes records at Produce
    and an AMQP reader decodes the batch; neither may inflate without bound (Kafka's
    max.message.bytes bounds what a client sends, not what it inflates to)."""
    since = mark(broker)
    topic = f"bigbomb-{uuid.uuid4().hex[:8]}"
    bomb = big_bomb(512, key=b"k" if compacted else None)
    with Raw(broker.kafka_port, timeout=60) as raw:
        if compacted:
            CT = admin.CreateTopicsRequest
            assert raw.call(CT, 4, topics=[CT.CreatableTopic(
                name=topic, num_partitions=1, replication_factor=1, assignments=[],
                configs=[CT.CreatableTopic.CreatableTopicConfig(
                    name="cleanup.policy", value="compact")])],
                timeout_ms=10000, validate_only=False).topics[0].error_code == 0
        peak0 = peak_rss(broker)
        code = produce(raw, topic, bomb).error_code
        assert code in (0, CORRUPT_MESSAGE, INVALID_RECORD, 10), code  # 10: MESSAGE_TOO_LARGE
        assert produce(raw, topic, batch([b"after-bomb"], key=b"k2")).error_code == 0
    if not compacted:
        assert amqp_reads_until(broker, topic, b"after-bomb")
    growth = peak_rss(broker) - peak0
    print(f"gzip bomb 512 MiB ({'compacted' if compacted else 'stream'}): code {code}, "
          f"RSS growth {growth >> 20} MiB")
    assert growth < 400 * 1024 * 1024, f"peak RSS grew {growth >> 20} MiB"
    healthy(broker)
    quiet(broker, since)


def test_a_hundred_thousand_tiny_records(broker: BrokerProcess) -> None:
    since = mark(broker)
    topic = f"tiny-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port, timeout=60) as raw:
        part = produce(raw, topic, batch([b""] * 100_000))
        assert part.error_code == 0, part
        assert produce(raw, topic, batch([b"last"])).base_offset == part.base_offset + 100_000
    healthy(broker)
    quiet(broker, since)


# -- many topics --------------------------------------------------------------------------------


def _api(broker: BrokerProcess, method: str, path: str, body: Any = None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.management_port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def test_produce_to_ten_thousand_unknown_topics_obeys_max_queues(broker: BrokerProcess) -> None:
    """Auto-creation has no bound in Kafka; here the vhost's max-queues applies: with room
    for 20 more queues, Produces naming 10k new topics create 20 at most and answer
    UNKNOWN_TOPIC_OR_PARTITION (or LEADER_NOT_AVAILABLE while creation is throttled, see
    the next test) for the rest, promptly."""
    since = mark(broker)
    existing = len(broker.get_json("/api/queues/%2F"))
    assert _api(broker, "PUT", "/api/vhost-limits/%2F/max-queues", {"value": existing + 20}) < 300
    try:
        P = producer.ProduceRequest
        one = batch([b"v"])
        base = uuid.uuid4().hex[:6]
        created = 0
        with Raw(broker.kafka_port, timeout=120) as raw:
            start = time.monotonic()
            for _ in range(5):  # retried as a client would, creation budget or not
                resp = raw.call(P, 7, transactional_id=None, acks=1, timeout_ms=10000,
                                topic_data=[P.TopicProduceData(name=f"many-{base}-{i}", partition_data=[
                                    P.TopicProduceData.PartitionProduceData(index=0, records=one)])
                                    for i in range(10_000)])
                codes = [t.partition_responses[0].error_code for t in resp.responses]
                assert set(codes) <= {0, UNKNOWN_TOPIC, LEADER_NOT_AVAILABLE}, set(codes)
                created = max(created, codes.count(0))
            took = time.monotonic() - start
        assert created == 20 and codes.count(0) == 20, codes.count(0)
        assert len(broker.get_json("/api/queues/%2F")) == existing + 20
        print(f"5 Produces naming 10k unknown topics under max-queues: {took:.2f}s")
        assert took < 60
    finally:
        _api(broker, "DELETE", "/api/vhost-limits/%2F/max-queues")
    healthy(broker)
    quiet(broker, since)


def test_auto_creating_thousands_of_topics_does_not_stall_others(broker: BrokerProcess) -> None:
    """A Metadata naming 3000 new topics (auto-creation allowed): creating a stream takes
    ~10 ms of the event loop, so the broker creates a bounded number per request and
    answers LEADER_NOT_AVAILABLE (5, retriable, as while Kafka's controller creates a
    topic) for the rest; the request is answered promptly and others are not stalled."""
    since = mark(broker)
    M = metadata.MetadataRequest
    base = uuid.uuid4().hex[:6]
    with Raw(broker.kafka_port, timeout=120) as raw:
        start = time.monotonic()
        resp = raw.call(M, 8, topics=[M.MetadataRequestTopic(name=f"auto-{base}-{i}")
                                      for i in range(3000)],
                        allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False)
        took = time.monotonic() - start
    codes = [t.error_code for t in resp.topics]
    assert set(codes) <= {0, LEADER_NOT_AVAILABLE} and 0 < codes.count(0) < 3000, set(codes)
    print(f"3000 auto-creations asked: {codes.count(0)} created in {took:.2f}s")
    assert took < 2, took
    healthy(broker)
    quiet(broker, since)


def test_headers_by_the_thousand(broker: BrokerProcess) -> None:
    since = mark(broker)
    topic = f"hdrs-{uuid.uuid4().hex[:8]}"
    headers = [(f"h{i}", b"v") for i in range(10_000)]
    with Raw(broker.kafka_port, timeout=60) as raw:
        part = produce(raw, topic, batch([b"with-headers"], headers=headers))
        assert part.error_code == 0
        assert b"with-headers" in bytes(fetch(raw, topic, part.base_offset).records)
    assert amqp_reads_until(broker, topic, b"with-headers")
    healthy(broker)
    quiet(broker, since)
