"""Message TTL (x-message-ttl, per-message expiration) and queue expiry (x-expires).

Waiting is event-driven: expiry is observed by consuming the dead-letter queue with a
deadline, queue deletion by polling a passive declare.
"""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, connect, eventually, queue_exists, ready_count, wait_until
from .lifecycle_helpers import (
    collect,
    collect_one,
    declare_dlq,
    dlx_args,
    queue_routable,
    strip_times,
)


def test_queue_ttl_expires_at_head_without_consumer(ch: BlockingChannel, qname: str) -> None:
    """x-message-ttl: the message expires with nobody reading and is dead-lettered as ``expired``."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq, **{"x-message-ttl": 100}))
    ch.basic_publish("", qname, b"old")
    got = collect_one(ch, dlq)
    assert got.body == b"old"
    assert got.method.routing_key == dlq
    assert got.props.expiration is None
    deaths = strip_times(got.headers["x-death"])
    # no original-expiration: the message itself had no expiration property
    assert deaths == [
        {"count": 1, "reason": "expired", "queue": qname, "exchange": "", "routing-keys": [qname]}
    ]
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)


def test_per_message_expiration_dead_lettered(ch: BlockingChannel, qname: str) -> None:
    """expiration (string ms): dead-lettered as ``expired``; the copy loses ``expiration`` and
    x-death records it as ``original-expiration``."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", qname, b"short", pika.BasicProperties(expiration="50", headers={"k": "v"}))
    got = collect_one(ch, dlq)
    assert got.body == b"short"
    assert got.props.expiration is None
    assert got.headers["k"] == "v"
    (death,) = strip_times(got.headers["x-death"])
    assert death == {
        "count": 1,
        "reason": "expired",
        "queue": qname,
        "exchange": "",
        "routing-keys": [qname],
        "original-expiration": "50",
    }


@pytest.mark.parametrize(
    "queue_ttl,expiration",
    [(60000, "50"), (50, "60000")],
    ids=["message-smaller", "queue-smaller"],
)
def test_smaller_ttl_wins(ch: BlockingChannel, qname: str, queue_ttl: int, expiration: str) -> None:
    """With both a queue TTL and a message expiration, the smaller one applies."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq, **{"x-message-ttl": queue_ttl}))
    ch.basic_publish("", qname, b"m", pika.BasicProperties(expiration=expiration))
    got = collect_one(ch, dlq, timeout=5)
    (death,) = got.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == expiration
    assert ready_count(ch, qname) == 0


def test_expired_message_never_delivered_by_get(ch: BlockingChannel, qname: str) -> None:
    """Once a message expired, basic.get answers get-empty."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", qname, b"gone", pika.BasicProperties(expiration="50"))
    assert collect_one(ch, dlq).body == b"gone"
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)


def test_expired_message_behind_head_not_delivered(ch: BlockingChannel, qname: str) -> None:
    """A message that expired while behind a TTL-less head is never delivered: after the head is
    taken, basic.get is get-empty and the expired one is dead-lettered as ``expired``.

    A sentinel with the same TTL published later in another queue tells when the deadline passed.
    """
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    sentinel_dlq = declare_dlq(ch, qname + ".sdlq")
    sentinel = qname + ".s"
    ch.queue_declare(sentinel, exclusive=True, arguments=dlx_args(sentinel_dlq))
    ch.basic_publish("", qname, b"head")
    ch.basic_publish("", qname, b"behind", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", sentinel, b"s", pika.BasicProperties(expiration="50"))
    assert collect_one(ch, sentinel_dlq).body == b"s"
    assert ch.basic_get(qname, auto_ack=True)[2] == b"head"
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)
    got = collect_one(ch, dlq)
    assert got.body == b"behind"
    assert got.headers["x-death"][0]["reason"] == "expired"


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_without_consumer_expires_immediately(ch: BlockingChannel, qname: str, where: str) -> None:
    """TTL 0 with no consumer ready: expired at once (dead-lettered, never enqueued for later)."""
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **({"x-message-ttl": 0} if where == "queue" else {}))
    ch.queue_declare(qname, exclusive=True, arguments=args)
    props = pika.BasicProperties(expiration="0") if where == "message" else None
    ch.basic_publish("", qname, b"now-or-never", props)
    got = collect_one(ch, dlq)
    assert got.body == b"now-or-never"
    assert got.headers["x-death"][0]["reason"] == "expired"
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_delivered_to_ready_consumer(
    conn: pika.BlockingConnection, ch: BlockingChannel, qname: str, where: str
) -> None:
    """TTL 0 with a consumer ready: delivered, not dead-lettered."""
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **({"x-message-ttl": 0} if where == "queue" else {}))
    ch.queue_declare(qname, exclusive=True, arguments=args)
    props = pika.BasicProperties(expiration="0") if where == "message" else None
    consumer = conn.channel()
    got: list[bytes] = []
    consumer.basic_consume(qname, lambda _c, _m, _p, body: got.append(body), auto_ack=True)
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish("", qname, b"caught", props)
    wait_until(conn, lambda: bool(got))
    assert got == [b"caught"]
    assert ready_count(ch, dlq) == 0


@pytest.mark.parametrize("expiration", ["abc", "-1", "", "1.5", " 100"])
def test_invalid_expiration_406(conn: pika.BlockingConnection, qname: str, expiration: str) -> None:
    """A non-integer or negative expiration: channel error 406 PRECONDITION_FAILED
    ("invalid expiration ..."); the connection survives."""
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    ch.confirm_delivery()
    with channel_error(406) as box:
        ch.basic_publish("", qname, b"x", pika.BasicProperties(expiration=expiration))
    assert "invalid expiration" in box[0].reply_text
    assert conn.is_open
    assert ready_count(conn.channel(), qname) == 0


def test_x_expires_deletes_unused_queue(conn: pika.BlockingConnection, broker_url: str, qname: str) -> None:
    """x-expires: a queue with no consumers and no use is deleted after N ms, messages and all.

    Existence is probed by mandatory publishes: publishing does not count as use (a passive
    declare would, and renew the lease).
    """
    probe = conn.channel()
    probe.confirm_delivery()
    conn.channel().queue_declare(qname, arguments={"x-expires": 200})
    assert queue_routable(probe, qname)
    eventually(lambda: not queue_routable(probe, qname))
    assert not queue_exists(broker_url, qname)


def test_x_expires_consumer_keeps_queue_alive(
    conn: pika.BlockingConnection, ch: BlockingChannel, broker_url: str, qname: str
) -> None:
    """A consumer keeps an x-expires queue alive; once it cancels, the queue expires.

    A twin queue with the same x-expires and no consumer shows when the period has passed.
    """
    probe = conn.channel()
    probe.confirm_delivery()
    twin = qname + ".twin"
    ch.queue_declare(qname, arguments={"x-expires": 150})
    ch.queue_declare(twin, arguments={"x-expires": 150})
    try:
        tag = ch.basic_consume(qname, lambda *a: None, auto_ack=True)
        eventually(lambda: not queue_routable(probe, twin))
        assert queue_routable(probe, qname)
        ch.basic_cancel(tag)
        eventually(lambda: not queue_routable(probe, qname))
        assert not queue_exists(broker_url, qname)
    finally:
        ch.queue_delete(qname)
        ch.queue_delete(twin)


def test_x_expires_consumer_on_other_connection(
    conn: pika.BlockingConnection, broker_url: str, qname: str
) -> None:
    """When the consuming connection closes, the x-expires period starts and the queue goes."""
    probe = conn.channel()
    probe.confirm_delivery()
    twin = qname + ".twin"
    with connect(broker_url) as c:
        ch = c.channel()
        ch.queue_declare(qname, arguments={"x-expires": 150})
        ch.basic_consume(qname, lambda *a: None, auto_ack=True)
        ch.queue_declare(twin, arguments={"x-expires": 150})
        eventually(lambda: not queue_routable(probe, twin))
        assert queue_routable(probe, qname)
    eventually(lambda: not queue_routable(probe, qname))


@pytest.mark.extension
def test_expiration_behind_head_expires_on_time(ch: BlockingChannel, qname: str) -> None:
    """smartbroker expires every message on time, not only at the head (RabbitMQ waits until
    the message reaches the head): expiration 50 behind a TTL-less message is dead-lettered
    without anyone reading the queue."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", qname, b"head")
    ch.basic_publish("", qname, b"behind", pika.BasicProperties(expiration="50"))
    (got,) = collect(ch, dlq, 1)
    assert got.body == b"behind"
    assert got.headers["x-death"][0]["reason"] == "expired"
    assert ready_count(ch, qname) == 1
    assert ch.basic_get(qname, auto_ack=True)[2] == b"head"
