"""Consumer arguments, exchange arguments and headers-binding arguments of the wrong field
type get RabbitMQ's 406 texts (rabbit_amqqueue:check_consume_arguments,
rabbit_exchange's alternate-exchange check, rabbit_exchange_type_headers)."""

from __future__ import annotations

import pika
import pytest

from .helpers import channel_error

CONSUMER_CASES = [
    ("x-priority", "high", '"expected integer, got longstr"'),
    ("x-priority", True, '"expected integer, got bool"'),
    ("x-priority", {"a": 1}, '"expected integer, got table"'),
    ("x-priority", None, '"expected integer, got void"'),
    ("x-cancel-on-ha-failover", "yes", "{unacceptable_type,longstr}"),
]


@pytest.mark.parametrize(("arg", "value", "why"), CONSUMER_CASES,
                         ids=[f"{a}={v!r}" for a, v, _ in CONSUMER_CASES])
def test_consumer_argument_of_the_wrong_type(conn: pika.BlockingConnection, qname: str, arg: str,
                                             value: object, why: str) -> None:
    conn.channel().queue_declare(qname, auto_delete=True)
    with channel_error(406) as err:
        conn.channel().basic_consume(qname, lambda *a: None, arguments={arg: value})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{qname}' "
                                 f"in vhost '/': {why}")


def test_consumer_priority_beyond_32_bits_is_accepted(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, auto_delete=True)
    ch.basic_publish("", qname, b"one")
    got: list[bytes] = []
    ch.basic_consume(qname, lambda c, m, p, body: (got.append(body), c.stop_consuming()),
                     auto_ack=True, arguments={"x-priority": 2**40})
    ch.start_consuming()
    assert got == [b"one"]


@pytest.mark.parametrize(("value", "kind"), [(None, "void"), (["a"], "array"), (7, "signedint"),
                                             ({"a": "b"}, "table")])
def test_alternate_exchange_of_the_wrong_type(conn: pika.BlockingConnection, uid: str,
                                             value: object, kind: str) -> None:
    name = f"test.ae-type.{uid}"
    with channel_error(406) as err:
        conn.channel().exchange_declare(name, "direct", auto_delete=True,
                                        arguments={"alternate-exchange": value})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid type '{kind}' for arg "
                                 f"'alternate-exchange' in exchange '{name}' in vhost '/'")


@pytest.mark.parametrize(("value", "shown"), [(True, "bool (value true)"), (None, "void (value undefined)"),
                                              (2**40, "long (value 1099511627776)"),
                                              (5, "signedint (value 5)")])
def test_headers_binding_x_match_of_the_wrong_type(conn: pika.BlockingConnection, qname: str,
                                                   uid: str, value: object, shown: str) -> None:
    exchange = f"test.hx-type.{uid}"
    ch = conn.channel()
    ch.exchange_declare(exchange, "headers", auto_delete=True)
    ch.queue_declare(qname, auto_delete=True)
    with channel_error(406) as err:
        ch.queue_bind(qname, exchange, arguments={"x-match": value})
    assert err[0].reply_text == f"PRECONDITION_FAILED - Invalid x-match field type {shown}; expected longstr"
    conn.channel().exchange_delete(exchange)
