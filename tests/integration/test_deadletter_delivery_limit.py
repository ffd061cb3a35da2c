"""Dead-lettering by delivery limit: x-delivery-limit on quorum queues, and the smartbroker
extensions (x-last-death-* headers, delivery limit on classic queues)."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .deadletter_helpers import get_one
from .helpers import connect
from .lifecycle_helpers import (
    LAST_DEATH_KEYS,
    collect,
    collect_one,
    death_headers,
    declare_dlq,
    dlx_args,
    strip_times,
)

# -- x-delivery-limit (quorum queues) ------------------------------------------------


@pytest.fixture
def quorum(broker_url: str, qname: str) -> Iterator[str]:
    """Name for a durable quorum queue (declared by the test), deleted afterwards."""
    yield qname + ".qq"
    with connect(broker_url) as c:
        c.channel().queue_delete(qname + ".qq")


def test_quorum_delivery_limit_dead_letters_poison_message(
    conn: pika.BlockingConnection, ch: BlockingChannel, qname: str, quorum: str
) -> None:
    """x-delivery-limit 2 on a quorum queue: a message nacked with requeue is delivered 3 times
    (x-delivery-count absent on the first delivery, then 1, 2), then dead-lettered with reason
    ``delivery_limit`` (the copy has no x-delivery-count)."""
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **{"x-queue-type": "quorum", "x-delivery-limit": 2})
    ch.queue_declare(quorum, durable=True, arguments=args)
    ch.confirm_delivery()
    ch.basic_publish("", quorum, b"poison", pika.BasicProperties(headers={"app": "x"}))
    seen: list[tuple[bool, object]] = []

    def on_message(c: BlockingChannel, method: object, props: pika.BasicProperties, body: bytes) -> None:
        headers = props.headers or {}
        seen.append((method.redelivered, headers.get("x-delivery-count")))  # type: ignore[attr-defined]
        assert headers.get("app") == "x"
        c.basic_nack(method.delivery_tag, requeue=True)  # type: ignore[attr-defined]

    consumer = conn.channel()
    consumer.basic_consume(quorum, on_message)
    got = collect_one(ch, dlq)
    assert seen == [(False, None), (True, 1), (True, 2)]
    assert got.body == b"poison"
    headers = death_headers(got.headers)
    assert "x-delivery-count" not in headers
    deaths = strip_times(headers.pop("x-death"))
    assert deaths == [
        {"count": 1, "reason": "delivery_limit", "queue": quorum, "exchange": "", "routing-keys": [quorum]}
    ]
    assert headers == {
        "app": "x",
        "x-first-death-exchange": "",
        "x-first-death-queue": quorum,
        "x-first-death-reason": "delivery_limit",
    }


def test_quorum_delivery_count_header_with_basic_get(ch: BlockingChannel, qname: str, quorum: str) -> None:
    """basic.get from a quorum queue: x-delivery-count is 0 on the first delivery (RabbitMQ 3.10
    adds it on get even then), 1 after one requeue; limit 1 dead-letters after the 2nd."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(quorum, durable=True, arguments=dlx_args(dlq, **{"x-queue-type": "quorum", "x-delivery-limit": 1}))
    ch.confirm_delivery()
    ch.basic_publish("", quorum, b"g")
    counts = []
    for _ in range(2):
        d = get_one(ch, quorum)
        counts.append((d.method.redelivered, d.headers.get("x-delivery-count")))
        ch.basic_reject(d.method.delivery_tag, requeue=True)
    assert counts == [(False, 0), (True, 1)]
    assert collect_one(ch, dlq).headers["x-death"][0]["reason"] == "delivery_limit"
    assert ch.basic_get(quorum, auto_ack=True) == (None, None, None)


def test_quorum_delivery_limit_reject_without_requeue_is_rejected(
    ch: BlockingChannel, qname: str, quorum: str
) -> None:
    """requeue=false on a quorum queue with a delivery limit: reason ``rejected``."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(quorum, durable=True, arguments=dlx_args(dlq, **{"x-queue-type": "quorum", "x-delivery-limit": 5}))
    ch.confirm_delivery()
    ch.basic_publish("", quorum, b"r")
    ch.basic_reject(get_one(ch, quorum).method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    assert got.headers["x-death"][0]["reason"] == "rejected"
    assert got.headers["x-first-death-reason"] == "rejected"


# -- smartbroker extensions ------------------------------------------------------------


@pytest.mark.extension
def test_x_last_death_headers(ch: BlockingChannel, qname: str) -> None:
    """smartbroker writes x-last-death-reason/-queue/-exchange (as RabbitMQ 3.13+ does; 3.10
    does not) describing the most recent death."""
    a, b = qname + ".A", qname + ".B"
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(a, exclusive=True, arguments=dlx_args(b, **{"x-message-ttl": 50}))
    ch.queue_declare(b, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", a, b"m")
    d = get_one(ch, b)
    assert [d.headers[k] for k in LAST_DEATH_KEYS] == ["expired", a, ""]
    ch.basic_reject(d.method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    assert [got.headers[k] for k in LAST_DEATH_KEYS] == ["rejected", b, ""]
    assert got.headers["x-first-death-reason"] == "expired"


@pytest.mark.extension
def test_classic_queue_delivery_limit(conn: pika.BlockingConnection, ch: BlockingChannel, qname: str) -> None:
    """smartbroker accepts x-delivery-limit on classic queues (RabbitMQ 3.10 refuses it with
    406): same counting and x-delivery-count header as a quorum queue."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq, **{"x-delivery-limit": 2}))
    ch.basic_publish("", qname, b"poison")
    seen: list[object] = []

    def on_message(c: BlockingChannel, method: object, props: pika.BasicProperties, body: bytes) -> None:
        seen.append((props.headers or {}).get("x-delivery-count"))
        c.basic_nack(method.delivery_tag, requeue=True)  # type: ignore[attr-defined]

    conn.channel().basic_consume(qname, on_message)
    got = collect(ch, dlq, 1)[0]
    assert seen == [None, 1, 2]
    assert got.headers["x-death"][0]["reason"] == "delivery_limit"
