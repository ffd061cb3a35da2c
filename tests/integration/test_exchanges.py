"""Exchange declare/delete/bind semantics and the errors RabbitMQ raises for them."""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, connection_error, drain, exchange_exists


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_declare_each_type(ch: BlockingChannel, xname: str, kind: str) -> None:
    """Every standard type can be declared, redeclared identically and passively declared."""
    ch.exchange_declare(xname, kind)
    ch.exchange_declare(xname, kind)
    ch.exchange_declare(xname, passive=True)


@pytest.mark.parametrize("name", ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"])
def test_predeclared_exchanges_exist(ch: BlockingChannel, name: str) -> None:
    """The standard amq.* exchanges exist in every vhost."""
    ch.exchange_declare(name, passive=True)


def test_redeclare_predeclared_equivalent_ok(ch: BlockingChannel) -> None:
    """Redeclaring amq.direct with its real (durable direct) settings is allowed."""
    ch.exchange_declare("amq.direct", "direct", durable=True)


def test_redeclare_predeclared_inequivalent_406(ch: BlockingChannel) -> None:
    """amq.direct is durable: redeclaring it non-durable is 406 PRECONDITION_FAILED."""
    with channel_error(406):
        ch.exchange_declare("amq.direct", "direct", durable=False)


def test_passive_declare_missing_404(ch: BlockingChannel, xname: str) -> None:
    """Passive declare of a missing exchange: channel.close 404 NOT_FOUND."""
    with channel_error(404):
        ch.exchange_declare(xname, passive=True)


def test_passive_declare_ignores_type(ch: BlockingChannel, xname: str) -> None:
    """A passive declare does not compare the type (RabbitMQ)."""
    ch.exchange_declare(xname, "direct")
    ch.exchange_declare(xname, "fanout", passive=True)


@pytest.mark.parametrize(
    "first,second",
    [
        ({"exchange_type": "direct"}, {"exchange_type": "fanout"}),
        ({"durable": False}, {"durable": True}),
        ({"auto_delete": False}, {"auto_delete": True}),
        ({"internal": False}, {"internal": True}),
    ],
    ids=["type", "durable", "auto_delete", "internal"],
)
def test_redeclare_inequivalent_406(conn: pika.BlockingConnection, xname: str, first: dict, second: dict) -> None:
    """Redeclaring with a different type/durable/auto_delete/internal: 406, channel closed."""
    ch = conn.channel()
    ch.exchange_declare(xname, **{"exchange_type": "direct", **first})
    with channel_error(406):
        ch.exchange_declare(xname, **{"exchange_type": "direct", **second})
    assert ch.is_closed and conn.is_open


def test_redeclare_with_other_arguments_is_accepted(ch: BlockingChannel, xname: str) -> None:
    """RabbitMQ does not compare unrecognised exchange arguments on redeclare."""
    ch.exchange_declare(xname, "direct")
    ch.exchange_declare(xname, "direct", arguments={"x-whatever": "value"})


def test_reserved_amq_prefix_403(ch: BlockingChannel, uid: str) -> None:
    """Declaring a new exchange named amq.*: 403 ACCESS_REFUSED."""
    with channel_error(403):
        ch.exchange_declare(f"amq.foo.{uid}", "direct")


@pytest.mark.parametrize("op", ["declare", "passive", "delete"])
def test_default_exchange_is_untouchable(ch: BlockingChannel, op: str) -> None:
    """Declare (even passive) or delete of the default exchange "": 403 ACCESS_REFUSED."""
    with channel_error(403):
        if op == "delete":
            ch.exchange_delete("")
        else:
            ch.exchange_declare("", "direct", durable=True, passive=op == "passive")


def test_delete_predeclared_403(ch: BlockingChannel) -> None:
    """Deleting a system exchange (amq.direct): 403 ACCESS_REFUSED."""
    with channel_error(403):
        ch.exchange_delete("amq.direct")


def test_unknown_exchange_type_is_connection_error_503(conn: pika.BlockingConnection, xname: str) -> None:
    """Unknown exchange type: connection-level 503 COMMAND_INVALID (a hard error in RabbitMQ)."""
    ch = conn.channel()
    with connection_error(503):
        ch.exchange_declare(xname, "x-no-such-type")
    assert conn.is_closed


def test_delete(ch: BlockingChannel, xname: str, broker_url: str) -> None:
    """exchange.delete removes the exchange; deleting a missing one is delete-ok (idempotent)."""
    ch.exchange_declare(xname, "topic")
    ch.exchange_delete(xname)
    assert not exchange_exists(broker_url, xname)
    ch.exchange_delete(xname)
    ch.exchange_delete(xname, if_unused=True)


def test_delete_removes_bindings(ch: BlockingChannel, xname: str) -> None:
    """A re-created exchange does not inherit the old one's bindings."""
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_declare(xname, "fanout")
    ch.queue_bind(q, xname)
    ch.exchange_delete(xname)
    ch.exchange_declare(xname, "fanout")
    ch.basic_publish(xname, "", b"lost")
    ch.basic_publish("", q, b"direct")
    assert drain(ch, q) == [b"direct"]


def test_delete_if_unused_with_binding_406(conn: pika.BlockingConnection, xname: str, broker_url: str) -> None:
    """delete(if_unused) of an exchange that is the source of a binding: 406 PRECONDITION_FAILED."""
    ch = conn.channel()
    ch.exchange_declare(xname, "fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, xname)
    with channel_error(406):
        ch.exchange_delete(xname, if_unused=True)
    assert exchange_exists(broker_url, xname)
    ch2 = conn.channel()
    ch2.queue_unbind(q, xname)
    ch2.exchange_delete(xname, if_unused=True)
    assert not exchange_exists(broker_url, xname)


def test_delete_if_unused_destination_only_is_unused(ch: BlockingChannel, xname: str, broker_url: str) -> None:
    """An exchange that is only the *destination* of an e2e binding counts as unused."""
    src, dst = xname + ".1", xname + ".2"
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src)
    ch.exchange_delete(dst, if_unused=True)
    assert not exchange_exists(broker_url, dst)


def test_exchange_to_exchange_binding_routes(ch: BlockingChannel, xname: str) -> None:
    """A message published to the source reaches queues bound to the destination; unbind stops it."""
    src, dst = xname + ".1", xname + ".2"
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, dst, "k")
    ch.exchange_bind(dst, src, "a.*")
    ch.basic_publish(src, "a.b", b"no: topic matches, direct key a.b != k")
    ch.basic_publish(src, "k", b"no: topic a.* does not match k")
    ch.exchange_bind(dst, src, "#")
    ch.basic_publish(src, "k", b"yes")
    ch.exchange_unbind(dst, src, "#")
    ch.basic_publish(src, "k", b"no: unbound")
    assert drain(ch, q) == [b"yes"]


def test_exchange_binding_chain_and_cycle(ch: BlockingChannel, xname: str) -> None:
    """Chains of e2e bindings route; a cycle delivers each message to a queue once."""
    a, b, c = xname + ".1", xname + ".2", xname + ".3"
    for x in (a, b, c):
        ch.exchange_declare(x, "fanout")
    ch.exchange_bind(b, a)
    ch.exchange_bind(c, b)
    ch.exchange_bind(a, c)  # cycle
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, c)
    ch.queue_bind(q, b)
    ch.basic_publish(a, "", b"once")
    assert drain(ch, q) == [b"once"]


def test_exchange_bind_missing_destination_404(ch: BlockingChannel, xname: str) -> None:
    with channel_error(404):
        ch.exchange_bind(xname, "amq.direct", "k")


def test_unbind_missing_is_ok(ch: BlockingChannel, xname: str) -> None:
    """RabbitMQ answers unbind-ok for bindings/exchanges/queues that do not exist."""
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_unbind(q, "amq.direct", "never-bound")
    ch.queue_unbind(q, xname, "k")
    ch.exchange_unbind(xname, "amq.direct", "k")


def test_internal_exchange_publish_403(conn: pika.BlockingConnection, xname: str) -> None:
    """Publishing directly to an internal exchange: channel.close 403 ACCESS_REFUSED."""
    ch = conn.channel()
    ch.exchange_declare(xname, "fanout", internal=True)
    ch.confirm_delivery()
    with channel_error(403):
        ch.basic_publish(xname, "", b"x")


def test_internal_exchange_reachable_via_e2e(ch: BlockingChannel, xname: str) -> None:
    """An internal exchange still routes messages arriving through an exchange binding."""
    src, internal = xname + ".1", xname + ".2"
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(internal, "fanout", internal=True)
    ch.exchange_bind(internal, src)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, internal)
    ch.basic_publish(src, "", b"via e2e")
    assert drain(ch, q) == [b"via e2e"]


def test_auto_delete_exchange_after_last_queue_unbind(ch: BlockingChannel, xname: str, broker_url: str) -> None:
    """An auto_delete exchange survives until it had a binding, then goes when the last one is removed."""
    ch.exchange_declare(xname, "direct", auto_delete=True)
    assert exchange_exists(broker_url, xname)  # never had a binding: still there
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, xname, "a")
    ch.queue_bind(q, xname, "b")
    ch.queue_unbind(q, xname, "a")
    assert exchange_exists(broker_url, xname)
    ch.queue_unbind(q, xname, "b")
    assert not exchange_exists(broker_url, xname)


def test_auto_delete_exchange_after_bound_queue_deleted(ch: BlockingChannel, xname: str, broker_url: str) -> None:
    """Deleting the only bound queue also removes the auto_delete exchange."""
    ch.exchange_declare(xname, "fanout", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, xname)
    ch.queue_delete(q)
    assert not exchange_exists(broker_url, xname)


def test_auto_delete_exchange_e2e_source_only(ch: BlockingChannel, xname: str, broker_url: str) -> None:
    """Removing an e2e binding deletes the auto_delete *source*, not the auto_delete destination."""
    src, dst = xname + ".1", xname + ".2"
    ch.exchange_declare(src, "fanout", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    ch.exchange_bind(dst, src)
    ch.exchange_unbind(dst, src)
    assert not exchange_exists(broker_url, src)
    assert exchange_exists(broker_url, dst)


def test_publish_to_missing_exchange_404(conn: pika.BlockingConnection, xname: str) -> None:
    """basic.publish to a missing exchange: channel.close 404 NOT_FOUND (async, seen on the next sync call)."""
    ch = conn.channel()
    ch.basic_publish(xname, "k", b"x")
    with channel_error(404):
        ch.queue_declare("", exclusive=True)
    assert conn.is_open


def test_bind_to_missing_exchange_or_queue_404(conn: pika.BlockingConnection, xname: str, qname: str) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    with channel_error(404):
        ch.queue_bind(q, xname, "k")
    ch = conn.channel()
    with channel_error(404):
        ch.queue_bind(qname, "amq.direct", "k")
