"""Idempotent producers (smartbroker extension): x-producer-id + x-producer-seq retries are
dropped yet confirmed, for classic and stream queues, and the state survives a restart."""

from __future__ import annotations

import pika
import pytest

from tests.conftest import BrokerProcess
from tests.integration.helpers import connect, drain, wait_until

pytestmark = pytest.mark.extension


def _publish(ch, queue: str, body: bytes, pid: str, seq: int) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(
        delivery_mode=2, headers={"x-producer-id": pid, "x-producer-seq": seq}))


def test_retries_are_confirmed_but_stored_once(broker_url: str, qname: str, uid: str) -> None:
    conn = connect(broker_url)
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    ch.confirm_delivery()
    pid = f"producer-{uid}"
    for seq, body in [(1, b"a"), (2, b"b"), (2, b"b-retry"), (1, b"a-retry"), (3, b"c")]:
        _publish(ch, qname, body, pid, seq)  # confirm_delivery raises on a nack: none here
    assert drain(ch, qname) == [b"a", b"b", b"c"]
    other = f"other-{uid}"
    _publish(ch, qname, b"independent", other, 1)  # another producer id has its own sequence
    assert drain(ch, qname) == [b"independent"]
    conn.close()


def test_messages_without_both_headers_are_never_deduplicated(broker_url: str, qname: str) -> None:
    conn = connect(broker_url)
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    for _ in range(2):
        ch.basic_publish("", qname, b"same", pika.BasicProperties(headers={"x-producer-id": "p"}))
    assert drain(ch, qname) == [b"same", b"same"]
    conn.close()


def test_stream_queue_deduplicates_too(broker_url: str, qname: str, uid: str) -> None:
    conn = connect(broker_url)
    ch = conn.channel()
    ch.queue_declare(qname, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for seq in (1, 1, 2, 2, 3):
        _publish(ch, qname, f"s{seq}".encode(), f"sp-{uid}", seq)
    ch.basic_qos(prefetch_count=10)
    got: list[bytes] = []
    ch.basic_consume(qname, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)),
                     arguments={"x-stream-offset": "first"})
    # the stream delivers in log order: once the last publish is here, a duplicate kept
    # by mistake has arrived before it
    wait_until(conn, lambda: b"s3" in got)
    assert got == [b"s1", b"s2", b"s3"]
    ch.queue_delete(qname)
    conn.close()


def test_producer_state_survives_a_restart(own_broker: BrokerProcess, uid: str) -> None:
    conn = connect(own_broker.url)
    ch = conn.channel()
    ch.queue_declare("dedup", durable=True)
    ch.confirm_delivery()
    _publish(ch, "dedup", b"first", uid, 7)
    conn.close()
    own_broker.kill()
    own_broker.start()
    conn = connect(own_broker.url)
    ch = conn.channel()
    ch.confirm_delivery()
    _publish(ch, "dedup", b"retry after crash", uid, 7)
    _publish(ch, "dedup", b"next", uid, 8)
    assert drain(ch, "dedup") == [b"first", b"next"]
    conn.close()
