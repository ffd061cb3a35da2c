"""Idempotent producers (smartbroker extension, issue 12 C): a publish that was nacked left
nothing behind, so the producer's retry with the same sequence is accepted and delivered
once; only an accepted sequence makes later retries duplicates."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

from tests.integration.helpers import connect, drain

pytestmark = pytest.mark.extension


def _publish(ch, queue: str, body: bytes, pid: str, seq: int, persistent: bool) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(
        delivery_mode=2 if persistent else 1,
        headers={"x-producer-id": pid, "x-producer-seq": seq}))


@pytest.mark.parametrize("durable", [False, True], ids=["transient", "durable"])
def test_retry_after_reject_publish_nack_is_accepted_and_delivered_once(
        broker_url: str, qname: str, uid: str, durable: bool) -> None:
    conn = connect(broker_url)
    ch = conn.channel()
    ch.queue_declare(qname, durable=durable, arguments={"x-max-length": 1,
                                                        "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    pid = f"retry-{uid}"
    try:
        _publish(ch, qname, b"a", pid, 1, durable)
        with pytest.raises(pika.exceptions.NackError):
            _publish(ch, qname, b"b", pid, 2, durable)  # queue full: nacked
        with pytest.raises(pika.exceptions.NackError):
            _publish(ch, qname, b"b", pid, 2, durable)  # still full: nacked again
        assert drain(ch, qname) == [b"a"]
        _publish(ch, qname, b"b", pid, 2, durable)  # room now: the retry is accepted ...
        _publish(ch, qname, b"b", pid, 2, durable)  # ... and its own retry is a duplicate
        _publish(ch, qname, b"a", pid, 1, durable)  # so is the old one
        assert drain(ch, qname) == [b"b"]
        _publish(ch, qname, b"c", pid, 3, durable)
        assert drain(ch, qname) == [b"c"]
    finally:
        ch.queue_delete(qname)
        conn.close()


def test_unroutable_publish_is_accepted_so_its_retry_is_a_duplicate(
        broker_url: str, qname: str, uid: str) -> None:
    """Unroutable is confirmed with an ack (RabbitMQ): the sequence counts as used."""
    conn = connect(broker_url)
    ch = conn.channel()
    ch.confirm_delivery()
    pid = f"unroutable-{uid}"
    _publish(ch, qname, b"lost", pid, 1, False)  # no such queue yet: routed nowhere, acked
    ch.queue_declare(qname, exclusive=True)
    _publish(ch, qname, b"lost", pid, 1, False)
    _publish(ch, qname, b"next", pid, 2, False)
    assert drain(ch, qname) == [b"next"]
    conn.close()
