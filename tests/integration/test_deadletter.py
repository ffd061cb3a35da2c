"""Dead-lettering: x-dead-letter-exchange / -routing-key, the reasons (rejected, expired,
maxlen, delivery_limit), the x-death and x-first-death-* headers exactly as RabbitMQ writes
them, cycles, DLX exchange types, and x-delivery-limit on quorum queues."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import connect, drain, eventually, ready_count, wait_until
from .lifecycle_helpers import (
    LAST_DEATH_KEYS,
    Delivery,
    assert_recent,
    collect,
    collect_one,
    death_headers,
    declare_dlq,
    dlx_args,
    strip_times,
)


def get_one(ch: BlockingChannel, queue: str, timeout: float = 5.0) -> Delivery:
    """basic.get (no ack) ``queue`` until a message is there (the queue may be fed by
    dead-lettering, which is asynchronous)."""
    box: list[Delivery] = []

    def poll() -> bool:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is not None:
            box.append(Delivery(method, props, body))
        return bool(box)

    wait_until(ch.connection, poll, timeout)
    return box[0]


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


def test_reject_into_own_queue_cycles(ch: BlockingChannel, qname: str) -> None:
    """A queue dead-lettering to itself: a cycle containing a reject goes on (count grows)."""
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": ""})
    ch.basic_publish("", qname, b"loop")
    for expected in (None, 1, 2, 3):
        d = get_one(ch, qname)
        deaths = d.headers.get("x-death")
        assert (deaths[0]["count"] if deaths else None) == expected
        if deaths:
            assert len(deaths) == 1 and deaths[0]["reason"] == "rejected"
        ch.basic_reject(d.method.delivery_tag, requeue=False)
    eventually(lambda: ready_count(ch, qname) == 1)


def test_expiry_only_cycle_is_dropped(ch: BlockingChannel, qname: str, xname: str) -> None:
    """C and D dead-letter into each other on expiry (through fanouts that also feed taps):
    the message goes C -> D -> C, and when C would dead-letter it again the cycle (made only
    of expirations) is detected and the message dropped."""
    c, d = qname + ".C", qname + ".D"
    to_c, to_d = xname + ".1", xname + ".2"
    tap_c, tap_d = declare_dlq(ch, qname + ".tapC"), declare_dlq(ch, qname + ".tapD")
    ch.exchange_declare(to_c, "fanout")
    ch.exchange_declare(to_d, "fanout")
    ch.queue_declare(c, exclusive=True, arguments={"x-dead-letter-exchange": to_d, "x-message-ttl": 50})
    ch.queue_declare(d, exclusive=True, arguments={"x-dead-letter-exchange": to_c, "x-message-ttl": 50})
    for q, x in ((c, to_c), (tap_c, to_c), (d, to_d), (tap_d, to_d)):
        ch.queue_bind(q, x)
    ch.basic_publish("", c, b"cyc")
    back_in_c = collect_one(ch, tap_c)
    assert [(e["queue"], e["reason"], e["count"]) for e in back_in_c.headers["x-death"]] == [
        (d, "expired", 1),
        (c, "expired", 1),
    ]
    # a 300 ms timer started now outlasts several 50 ms hops the message would make if it lived on
    timer_dlq = declare_dlq(ch, qname + ".timer.dlq")
    timer = qname + ".timer"
    ch.queue_declare(timer, exclusive=True, arguments=dlx_args(timer_dlq, **{"x-message-ttl": 300}))
    ch.basic_publish("", timer, b"t")
    collect_one(ch, timer_dlq)
    assert [ready_count(ch, q) for q in (c, d, tap_d, tap_c)] == [0, 0, 1, 0]


def test_expiry_into_own_queue_is_dropped(ch: BlockingChannel, qname: str) -> None:
    """A queue whose expired messages dead-letter back into itself: dropped after one expiry."""
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-message-ttl": 50})
    ch.basic_publish("", qname, b"self")
    timer_dlq = declare_dlq(ch, qname + ".timer.dlq")
    timer = qname + ".timer"
    ch.queue_declare(timer, exclusive=True, arguments=dlx_args(timer_dlq, **{"x-message-ttl": 300}))
    ch.basic_publish("", timer, b"t")
    collect_one(ch, timer_dlq)
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)


@pytest.mark.parametrize("kind", ["fanout", "topic", "headers"])
def test_dlx_of_any_type(ch: BlockingChannel, qname: str, xname: str, kind: str) -> None:
    """The DLX may be of any type; it routes the dead letter by its own rules."""
    ch.exchange_declare(xname, kind)
    dlq = declare_dlq(ch, qname + ".dlq")
    if kind == "topic":
        ch.queue_bind(dlq, xname, "dead.*")
    elif kind == "headers":
        ch.queue_bind(dlq, xname, arguments={"x-match": "all", "app": "x"})
    else:
        ch.queue_bind(dlq, xname)
    args = {"x-dead-letter-exchange": xname, "x-dead-letter-routing-key": "dead.letter"}
    ch.queue_declare(qname, exclusive=True, arguments=args)
    ch.basic_publish("", qname, b"any", pika.BasicProperties(headers={"app": "x"}))
    ch.basic_reject(get_one(ch, qname).method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    assert (got.body, got.method.exchange, got.method.routing_key) == (b"any", xname, "dead.letter")


def test_confirm_covers_original_publish(ch: BlockingChannel, qname: str, xname: str) -> None:
    """Under confirms the publish into a dead-lettering queue is acked (TTL 0 expires it at once),
    whether or not the DLX exists; the dead letter still arrives."""
    ch.exchange_declare(xname, "fanout")
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_bind(dlq, xname)
    ch.queue_declare(qname, exclusive=True, arguments={"x-dead-letter-exchange": xname, "x-message-ttl": 0})
    missing = qname + ".missing"
    ch.queue_declare(missing, exclusive=True, arguments={"x-dead-letter-exchange": xname + ".3", "x-message-ttl": 0})
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"acked", mandatory=True)
    ch.basic_publish("", missing, b"acked too", mandatory=True)
    assert collect_one(ch, dlq).body == b"acked"


def test_missing_dlx_drops_silently(conn: pika.BlockingConnection, ch: BlockingChannel, qname: str, uid: str) -> None:
    """Dead-lettering to an exchange that does not exist: the message is dropped, no error."""
    args = {"x-dead-letter-exchange": f"no.such.exchange.{uid}"}
    ch.queue_declare(qname, exclusive=True, arguments=args)
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"rejected")
    ch.basic_reject(get_one(ch, qname).method.delivery_tag, requeue=False)
    ch.basic_publish("", qname, b"expired", pika.BasicProperties(expiration="50"))
    eventually(lambda: ready_count(ch, qname) == 0)
    assert ch.basic_get(qname, auto_ack=True) == (None, None, None)
    assert ch.is_open and conn.is_open


def test_delete_and_purge_do_not_dead_letter(ch: BlockingChannel, qname: str) -> None:
    """Purged or deleted messages are not dead-lettered; neither are unacked ones requeued by
    closing the channel."""
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", qname, b"purged")
    assert ch.queue_purge(qname).method.message_count == 1
    ch.basic_publish("", qname, b"unacked")
    other = ch.connection.channel()
    assert other.basic_get(qname, auto_ack=False)[2] == b"unacked"
    other.close()
    assert drain(ch, qname) == [b"unacked"]
    ch.basic_publish("", qname, b"deleted")
    assert ch.queue_delete(qname).method.message_count == 1
    # a dead letter would have been routed before another round trip through the same path
    ch.basic_publish("", dlq, b"marker")
    assert drain(ch, dlq) == [b"marker"]


def test_first_death_headers_stay(ch: BlockingChannel, qname: str) -> None:
    """x-first-death-* describe the first death and do not change on later ones."""
    a, b = qname + ".A", qname + ".B"
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(a, exclusive=True, arguments=dlx_args(b, **{"x-message-ttl": 50}))
    ch.queue_declare(b, exclusive=True, arguments=dlx_args(dlq))
    ch.basic_publish("", a, b"twice")
    ch.basic_nack(get_one(ch, b).method.delivery_tag, requeue=False)
    got = collect_one(ch, dlq)
    headers = death_headers(got.headers)
    assert [(e["queue"], e["reason"]) for e in headers["x-death"]] == [(b, "rejected"), (a, "expired")]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"], headers["x-first-death-exchange"]) == (
        a, "expired", "",
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
