"""Dead-lettering behaviour: cycles (reject and expiry), DLX exchange types, confirms,
a missing DLX, delete/purge not dead-lettering, first-death headers staying put."""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .deadletter_helpers import get_one
from .helpers import drain, eventually, ready_count
from .lifecycle_helpers import (
    collect_one,
    death_headers,
    declare_dlq,
    dlx_args,
)


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
