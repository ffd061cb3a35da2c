"""Dead-lettering headers: x-death and x-first-death-* exactly as RabbitMQ writes them for
rejected messages, x-dead-letter-routing-key, CC/BCC, and x-death counts over round trips."""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .deadletter_helpers import get_one
from .helpers import ready_count
from .lifecycle_helpers import (
    assert_recent,
    collect_one,
    death_headers,
    declare_dlq,
    dlx_args,
    strip_times,
)


@pytest.mark.parametrize("how", ["reject", "nack", "nack-multiple"])
def test_rejected_dead_letter_headers_exact(
    ch: BlockingChannel, qname: str, xname: str, uid: str, how: str
) -> None:
    """reject / nack with requeue=false: dead-lettered with reason ``rejected``; headers are the
    original ones plus x-death (one table) and x-first-death-queue/-reason/-exchange."""
    ch.exchange_declare(xname, "direct")
    dlq = declare_dlq(ch, qname + ".dlq")
    key = f"orig.{uid}"
    ch.queue_bind(dlq, xname, key)
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": xname})
    ch.queue_bind(qname, "amq.direct", key)
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="text/plain",
        message_id="m-1",
        correlation_id="c-1",
        delivery_mode=2,
        priority=3,
        headers={"app": "x", "n": 7},
    )
    ch.basic_publish("amq.direct", key, b"payload", props)
    method, _, body = ch.basic_get(qname, auto_ack=False)
    assert body == b"payload"
    if how == "reject":
        ch.basic_reject(method.delivery_tag, requeue=False)
    else:
        ch.basic_nack(method.delivery_tag, multiple=how == "nack-multiple", requeue=False)
    got = collect_one(ch, dlq)
    assert got.body == b"payload"
    assert (got.method.exchange, got.method.routing_key, got.method.redelivered) == (xname, key, False)
    p = got.props
    assert (p.content_type, p.message_id, p.correlation_id, p.delivery_mode, p.priority) == (
        "text/plain", "m-1", "c-1", 2, 3,
    )
    headers = death_headers(got.headers)
    deaths = headers.pop("x-death")
    assert headers == {
        "app": "x",
        "n": 7,
        "x-first-death-exchange": "amq.direct",
        "x-first-death-queue": qname,
        "x-first-death-reason": "rejected",
    }
    assert len(deaths) == 1
    assert_recent(deaths[0]["time"])
    assert strip_times(deaths) == [
        {"count": 1, "reason": "rejected", "queue": qname, "exchange": "amq.direct", "routing-keys": [key]}
    ]
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)


def test_requeue_true_does_not_dead_letter(ch: BlockingChannel, qname: str) -> None:
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", qname, b"again")
    method, _, _ = ch.basic_get(qname, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(qname, auto_ack=True)
    assert (body, method.redelivered) == (b"again", True)
    assert ready_count(ch, dlq) == 0


def test_dead_letter_routing_key_overrides_but_x_death_keeps_original(
    ch: BlockingChannel, qname: str, uid: str
) -> None:
    """x-dead-letter-routing-key replaces the routing key; x-death keeps the original keys."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.queue_bind(qname, "amq.topic", f"orders.{uid}.#")
    ch.basic_publish("amq.topic", f"orders.{uid}.new", b"o")
    ch.basic_nack(get_one(ch, qname).method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    assert (got.method.exchange, got.method.routing_key) == ("", dlq)
    (death,) = got.headers["x-death"]
    assert (death["exchange"], death["routing-keys"]) == ("amq.topic", [f"orders.{uid}.new"])
    assert got.headers["x-first-death-exchange"] == "amq.topic"


def test_without_dead_letter_routing_key_original_key_is_used(
    ch: BlockingChannel, qname: str, xname: str, uid: str
) -> None:
    ch.exchange_declare(xname, "direct")
    dlq = declare_dlq(ch, qname + ".dlq")
    key = f"the-key.{uid}"
    ch.queue_bind(dlq, xname, key)
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": xname})
    ch.queue_bind(qname, "amq.direct", key)
    ch.basic_publish("amq.direct", key, b"k")
    ch.basic_reject(get_one(ch, qname).method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    assert (got.method.exchange, got.method.routing_key, got.body) == (xname, key, b"k")


def test_cc_bcc_in_dead_letters(ch: BlockingChannel, qname: str, xname: str, uid: str) -> None:
    """x-death routing-keys lists the routing key and the CC keys (BCC never visible); the
    dead-lettered copy keeps the CC header, has no BCC header, and (no dead-letter routing
    key) is routed by all of the original keys, BCC ones included."""
    ch.exchange_declare(xname, "direct")
    rk, cc, bcc = f"rk1.{uid}", f"cc1.{uid}", f"bcc1.{uid}"
    taps = {}
    for key in (rk, cc, bcc):
        taps[key] = declare_dlq(ch, f"{qname}.{key.split('.')[0]}")
        ch.queue_bind(taps[key], xname, key)
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": xname})
    ch.queue_bind(qname, "amq.direct", bcc)
    ch.confirm_delivery()
    ch.basic_publish(
        "amq.direct",
        rk,
        b"m",
        pika.BasicProperties(expiration="60000", headers={"CC": [cc], "BCC": [bcc]}),
        mandatory=True,
    )
    d = get_one(ch, qname)
    assert d.headers == {"CC": [cc]}
    assert d.props.expiration == "60000"
    ch.basic_reject(d.method.delivery_tag, requeue=False)
    for key, tap in taps.items():
        got = collect_one(ch, tap)
        assert (got.method.exchange, got.method.routing_key) == (xname, rk), key
        assert got.props.expiration is None
        headers = death_headers(got.headers)
        assert "BCC" not in headers
        assert headers["CC"] == [cc]
        assert strip_times(headers["x-death"]) == [
            {
                "count": 1,
                "reason": "rejected",
                "queue": qname,
                "exchange": "amq.direct",
                "routing-keys": [rk, cc],
                "original-expiration": "60000",
            }
        ]


def test_x_death_counts_over_two_round_trips(ch: BlockingChannel, qname: str) -> None:
    """A rejects -> B (TTL) expires back to A -> A rejects again -> B -> A: one x-death entry
    per (queue, reason), its count incremented and moved to the front (newest first)."""
    a, b = qname + ".A", qname + ".B"
    ch.queue_declare(a, exclusive=True, arguments=dlx_args(b))
    ch.queue_declare(b, exclusive=True, arguments=dlx_args(a, **{"x-message-ttl": 50}))
    ch.basic_publish("", a, b"ping-pong")

    first = get_one(ch, a)
    assert first.props.headers is None
    ch.basic_reject(first.method.delivery_tag, requeue=False)

    second = get_one(ch, a)
    assert second.body == b"ping-pong"
    headers = death_headers(second.headers)
    assert strip_times(headers.pop("x-death")) == [
        {"count": 1, "reason": "expired", "queue": b, "exchange": "", "routing-keys": [b]},
        {"count": 1, "reason": "rejected", "queue": a, "exchange": "", "routing-keys": [a]},
    ]
    assert headers == {"x-first-death-exchange": "", "x-first-death-queue": a, "x-first-death-reason": "rejected"}
    ch.basic_reject(second.method.delivery_tag, requeue=False)

    third = get_one(ch, a)
    headers = death_headers(third.headers)
    assert strip_times(headers.pop("x-death")) == [
        {"count": 2, "reason": "expired", "queue": b, "exchange": "", "routing-keys": [b]},
        {"count": 2, "reason": "rejected", "queue": a, "exchange": "", "routing-keys": [a]},
    ]
    assert headers == {"x-first-death-exchange": "", "x-first-death-queue": a, "x-first-death-reason": "rejected"}
    ch.basic_ack(third.method.delivery_tag)
