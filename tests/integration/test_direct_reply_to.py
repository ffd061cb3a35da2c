"""RabbitMQ's direct reply-to (amq.rabbitmq.reply-to): RPC replies without a reply queue."""

from __future__ import annotations

import time

import pika
import pytest

from tests.integration.helpers import channel_error, connect

PSEUDO = "amq.rabbitmq.reply-to"


def _pump(conn: pika.BlockingConnection, cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    return cond()


def test_rpc_round_trip(broker_url: str, qname: str) -> None:
    server = connect(broker_url)
    sch = server.channel()
    sch.queue_declare(qname, exclusive=True)
    client = connect(broker_url)
    cch = client.channel()
    replies: list[tuple[bytes, str | None]] = []
    cch.basic_consume(PSEUDO, lambda c, m, p, b: replies.append((b, p.correlation_id)),
                      auto_ack=True)
    cch.basic_publish("", qname, b"2+2", pika.BasicProperties(reply_to=PSEUDO, correlation_id="c1"))
    assert _pump(server, lambda: sch.queue_declare(qname, passive=True).method.message_count == 1)
    _method, props, body = sch.basic_get(qname, auto_ack=True)
    assert body == b"2+2"
    assert props.reply_to.startswith(PSEUDO + ".")  # rewritten to address this channel
    sch.basic_publish("", props.reply_to, b"4", pika.BasicProperties(correlation_id=props.correlation_id))
    assert _pump(client, lambda: bool(replies))
    assert replies == [(b"4", "c1")]
    client.close()
    server.close()


def test_reply_consumer_must_be_no_ack(conn: pika.BlockingConnection) -> None:
    with channel_error(406):
        ch = conn.channel()
        ch.basic_consume(PSEUDO, lambda *a: None, auto_ack=False)


def test_publishing_with_reply_to_needs_the_consumer(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    with channel_error(406) as err:
        ch.confirm_delivery()
        ch.basic_publish("", qname, b"x", pika.BasicProperties(reply_to=PSEUDO))
    assert "fast reply consumer does not exist" in err[0].reply_text


def test_pseudo_queue_passive_declare(conn: pika.BlockingConnection) -> None:
    """RabbitMQ answers a passive declare of the pseudo-queue with 0 messages, 1 consumer."""
    ok = conn.channel().queue_declare(PSEUDO, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (PSEUDO, 0, 1)


@pytest.mark.parametrize("gone", ["cancelled", "closed"])
def test_reply_to_a_gone_consumer_is_dropped(broker_url: str, qname: str, gone: str) -> None:
    client = connect(broker_url)
    cch = client.channel()
    tag = cch.basic_consume(PSEUDO, lambda *a: None, auto_ack=True)
    cch.queue_declare(qname, exclusive=True)
    cch.basic_publish("", qname, b"req", pika.BasicProperties(reply_to=PSEUDO))
    assert _pump(client, lambda: cch.queue_declare(qname, passive=True).method.message_count == 1)
    reply_to = cch.basic_get(qname, auto_ack=True)[1].reply_to
    if gone == "cancelled":
        cch.basic_cancel(tag)
    else:
        cch.close()
    other = connect(broker_url).channel()
    other.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        other.basic_publish("", reply_to, b"late reply", mandatory=True)  # returned: no route
    client.close()
