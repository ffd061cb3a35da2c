"""Bad queue arguments and properties get RabbitMQ's 406 replies, text included (clients
and operators match on these strings)."""

from __future__ import annotations

import pika
import pytest

from .helpers import channel_error

CASES = [
    ("x-message-ttl", "abc", '"expected integer, got longstr"'),
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-max-length", True, '"expected integer, got bool"'),
    ("x-max-length-bytes", {"a": 1}, '"expected integer, got table"'),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -5, "{value_negative,-5}"),
    ("x-expires", [1], '"expected integer, got array"'),
    ("x-max-priority", 300, "{max_value_exceeded,300}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-overflow", "nope", "invalid_overflow"),
    ("x-overflow", 3, "{unacceptable_type,signedint}"),
    ("x-queue-mode", "fast", "\"unsupported queue mode 'fast'\""),
    ("x-queue-type", "weird", "\"unsupported queue type 'weird'\""),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-dead-letter-routing-key", 7, "{unacceptable_type,signedint}"),
]


@pytest.mark.parametrize(("arg", "value", "why"), CASES, ids=[f"{a}={v!r}" for a, v, _ in CASES])
def test_invalid_argument_reply(conn: pika.BlockingConnection, qname: str, arg: str, value: object,
                                why: str) -> None:
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, auto_delete=True, arguments={arg: value})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{qname}' "
                                 f"in vhost '/': {why}")


def test_dead_letter_exchange_of_the_wrong_type(conn: pika.BlockingConnection, qname: str) -> None:
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, auto_delete=True, arguments={"x-dead-letter-exchange": 1})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid type 'signedint' for arg "
                                 f"'x-dead-letter-exchange' in queue '{qname}' in vhost '/'")


def test_dead_letter_routing_key_without_exchange(conn: pika.BlockingConnection, qname: str) -> None:
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, auto_delete=True,
                                     arguments={"x-dead-letter-routing-key": "rk"})
    assert err[0].reply_text.endswith(": routing_key_but_no_dlx_defined")


@pytest.mark.parametrize(("kind", "props", "refused"), [
    ("quorum", {"durable": False}, "non-durable"),
    ("quorum", {"durable": True, "exclusive": True}, "exclusive-owner"),
    ("quorum", {"durable": False, "auto_delete": True}, "auto-delete"),
    ("stream", {"durable": False, "exclusive": True}, "exclusive-owner"),
    ("stream", {"durable": True, "exclusive": True, "auto_delete": True}, "auto-delete"),
])
def test_replicated_queue_types_refuse_transient_properties(conn: pika.BlockingConnection,
                                                            qname: str, kind: str, props: dict,
                                                            refused: str) -> None:
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, arguments={"x-queue-type": kind}, **props)
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid property '{refused}' for queue "
                                 f"'{qname}' in vhost '/'")


def test_passive_declare_of_the_empty_name_is_not_found(conn: pika.BlockingConnection,
                                                        qname: str) -> None:
    """No "last declared queue" shortcut for a passive declare (RabbitMQ looks up '')."""
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    with channel_error(404) as err:
        ch.queue_declare("", passive=True)
    assert err[0].reply_text == "NOT_FOUND - no queue '' in vhost '/'"


@pytest.mark.parametrize("name", ["amq.direct", "amq.no-such-exchange"])
def test_amq_exchanges_cannot_be_deleted(conn: pika.BlockingConnection, name: str) -> None:
    with channel_error(403) as err:
        conn.channel().exchange_delete(name)
    assert err[0].reply_text == (f"ACCESS_REFUSED - deletion of system exchange '{name}' in "
                                 f"vhost '/' not allowed")


def test_redeclare_with_another_argument_value(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, auto_delete=True, arguments={"x-max-length": 5})
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, auto_delete=True, arguments={"x-max-length": 6})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue "
                                 f"'{qname}' in vhost '/': received '6' but current is '5'")
    with channel_error(406) as err:
        conn.channel().queue_declare(qname, auto_delete=True)
    assert err[0].reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue "
                                 f"'{qname}' in vhost '/': received none but current is the value "
                                 f"'5' of type 'signedint'")
