#!/usr/bin/env python3
"""The client side of ``benchmarks/kafka_vs_tansu.py``: one measurement per process, JSON on stdout.

    python benchmarks/kafka_client.py produce --bootstrap H:P --topic T --size 100 --count N
    python benchmarks/kafka_client.py consume --bootstrap H:P --topic T --count N
    python benchmarks/kafka_client.py latency --bootstrap H:P --topic T --rate R --seconds S

A separate process from both the broker and the orchestrator, so the client's CPU never
competes inside the broker's interpreter and the orchestrator can read the broker's
/proc counters around exactly one measurement. The same confluent-kafka (librdkafka)
settings are used against every broker; they are in ``PRODUCER`` and ``consumer_conf``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

# librdkafka's own defaults, spelled out: batches of up to 1 MB or 10,000 records, filled
# for 5 ms; acks=all as the issue asks. Idempotence is switched per run.
PRODUCER: dict[str, Any] = {
    "acks": "all", "linger.ms": 5, "batch.size": 1_000_000, "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000, "compression.type": "none",
}
STAMP = struct.Struct(">d")  # the latency run's payload starts with the send time


def consumer_conf(bootstrap: str) -> dict[str, Any]:
    """A consumer that reads assigned partitions; no group membership, no commits.

    Why ``assign`` of every partition and not ``subscribe``: a group needs JoinGroup,
    which smartbroker does not serve yet at the time of writing, and reading is what we
    measure. The "Tansu stalls after ~59k of 200k" seen with ``assign`` of partition 0
    was not a stall: Tansu auto-creates a topic with 4 partitions, and partition 0 held
    only its share. ``kafka_vs_tansu.py`` therefore creates every topic itself, with the same
    partition count on both brokers, and we assign all of them from the beginning.

    Why a larger prefetch queue: with librdkafka's defaults the consumer stops fetching
    once 100,000 records wait in its local queue and looks again only after
    ``fetch.queue.backoff.ms`` (1 s), which capped both brokers near 0.2 M records/s of
    100 B while each was idle most of the time (measured: 0.2 CPU-s per 1 M records).
    """
    return {"bootstrap.servers": bootstrap, "group.id": "bench-unused",
            "enable.auto.commit": False, "enable.partition.eof": False,
            "fetch.wait.max.ms": 100, "fetch.min.bytes": 1,
            "queued.min.messages": 1_000_000, "queued.max.messages.kbytes": 262_144,
            "fetch.queue.backoff.ms": 10}


def assign_all(c: Consumer, topic: str, offset: int) -> None:
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, offset) for p in sorted(parts)])


def produce(bootstrap: str, topic: str, size: int, count: int, idempotence: bool) -> dict:
    """Send ``count`` records of ``size`` bytes as fast as librdkafka takes them; the
    clock stops when the last acknowledgement (acks=all) arrives.

    At 100 B this loop, not the broker, can be the ceiling (measured here with nothing to
    send to: ~0.4 M ``produce()`` calls/s with a delivery callback and a key built per
    call, ~0.75 M with prebuilt keys and no callback), so keys are prebuilt. The callback
    stays: it is the only reliable count of failures (Tansu 0.6's high watermark lagged
    the records it had acknowledged and served, 999,547 of 1,000,000).
    """
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER,
                  "enable.idempotence": idempotence})
    failed = 0

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    p.list_topics(topic, timeout=10)  # connect and learn the leader before the clock
    value = b"v" * size
    keys = [str(k).encode() for k in range(1000)]
    t0 = time.monotonic()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value, keys[i % 1000], on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    seconds = time.monotonic() - t0
    return {"count": count, "seconds": seconds, "rate": count / seconds,
            "failed": failed, "unflushed": left}


def consume(bootstrap: str, topic: str, count: int, timeout: float) -> dict:
    """Read ``count`` records from the beginning; the clock starts at the first record
    (group join and metadata are not reading)."""
    c = Consumer(consumer_conf(bootstrap))
    assign_all(c, topic, OFFSET_BEGINNING)
    got, nbytes, t0 = 0, 0, 0.0
    deadline = time.monotonic() + timeout
    while got < count and time.monotonic() < deadline:
        msgs = c.consume(10_000, 0.5)
        for m in msgs:
            if m.error() is None:
                if not got:
                    t0 = time.monotonic()
                got += 1
                nbytes += len(m.value() or b"")
    seconds = time.monotonic() - t0 if got else 0.0
    c.close()
    return {"count": got, "expected": count, "seconds": seconds, "bytes": nbytes,
            "rate": (got - 1) / seconds if got > 1 and seconds > 0 else 0.0}


def latency(bootstrap: str, topic: str, rate: int, seconds: float) -> dict:
    """Produce at a fixed ``rate`` (linger.ms 0: each record leaves at once) while a
    consumer in the same process reads; latency is receive time minus the send time
    carried in the value, for every record (one clock, so no skew)."""
    c = Consumer(consumer_conf(bootstrap))
    assign_all(c, topic, OFFSET_BEGINNING)  # a fresh, empty topic: the start is the end
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER, "linger.ms": 0,
                  "enable.idempotence": False})
    p.produce(topic, STAMP.pack(time.monotonic()))  # warm-up: both sides connected
    p.flush(10)
    deadline = time.monotonic() + 30
    while not any(m.error() is None for m in c.consume(10, 0.2)):
        if time.monotonic() > deadline:
            raise SystemExit("latency: the warm-up record never arrived")
    total = int(rate * seconds)
    lat: list[float] = []
    pad = b"p" * 92  # 100 B records
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i / rate
        while (now := time.monotonic()) < due:
            for m in c.consume(1000, max(0.0, min(due - now, 0.002))):
                if m.error() is None:
                    lat.append(time.monotonic() - STAMP.unpack_from(m.value())[0])
            p.poll(0)
        p.produce(topic, STAMP.pack(time.monotonic()) + pad)
    p.flush(30)
    end = time.monotonic() + 10
    while len(lat) < total and time.monotonic() < end:
        for m in c.consume(1000, 0.1):
            if m.error() is None:
                lat.append(time.monotonic() - STAMP.unpack_from(m.value())[0])
    c.close()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {"sent": total, "received": len(lat), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["produce", "consume", "latency"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--idempotence", action="store_true")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    if a.what == "produce":
        out = produce(a.bootstrap, a.topic, a.size, a.count, a.idempotence)
    elif a.what == "consume":
        out = consume(a.bootstrap, a.topic, a.count, a.timeout)
    else:
        out = latency(a.bootstrap, a.topic, a.rate, a.seconds)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
