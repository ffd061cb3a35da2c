"""AMQP transactions (tx class): publishes and acks take effect together at commit."""

from __future__ import annotations

import pika
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import channel_error, connect, drain, ready_count


def test_publishes_invisible_until_commit(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    observer = conn.channel()
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", qname, f"m{i}".encode())
    assert ready_count(observer, qname) == 0
    ch.tx_commit()
    assert drain(observer, qname) == [b"m0", b"m1", b"m2"]


def test_rollback_discards_publishes(ch: BlockingChannel, qname: str) -> None:
    ch.queue_declare(qname, exclusive=True)
    ch.tx_select()
    ch.basic_publish("", qname, b"never")
    ch.tx_rollback()
    ch.basic_publish("", qname, b"kept")
    ch.tx_commit()
    assert drain(ch, qname) == [b"kept"]


def test_acks_take_effect_at_commit_and_rollback_keeps_them_unacked(
        conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    for i in range(2):
        ch.basic_publish("", qname, f"m{i}".encode())
    ch.tx_select()
    first = ch.basic_get(qname)[0]
    ch.basic_ack(first.delivery_tag)
    ch.tx_rollback()
    second = ch.basic_get(qname)[0]
    ch.basic_ack(second.delivery_tag)
    ch.tx_commit()
    ch.close()
    # m0's ack was rolled back, so closing the channel requeues it; m1's ack was committed
    check = conn.channel()
    assert drain(check, qname) == [b"m0"]


def test_uncommitted_publishes_vanish_with_the_connection(broker_url: str, qname: str,
                                                         ch: BlockingChannel) -> None:
    ch.queue_declare(qname)
    other = connect(broker_url)
    och = other.channel()
    och.tx_select()
    och.basic_publish("", qname, b"lost")
    other.close()
    ch.basic_publish("", qname, b"after")
    assert drain(ch, qname) == [b"after"]
    ch.queue_delete(qname)


def test_commit_without_select_is_406(ch: BlockingChannel) -> None:
    with channel_error(406):
        ch.tx_commit()


def test_rollback_without_select_is_406(ch: BlockingChannel) -> None:
    with channel_error(406):
        ch.tx_rollback()


def test_acks_of_an_uncommitted_transaction_are_undone_when_the_connection_drops(
        broker_url: str, qname: str, ch: BlockingChannel) -> None:
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"work")
    worker = connect(broker_url)
    wch = worker.channel()
    wch.tx_select()
    method = wch.basic_get(qname)[0]
    wch.basic_ack(method.delivery_tag)
    wch.basic_publish("", qname, b"result")
    worker.close()  # no commit: neither the ack nor the publish happened
    assert drain(ch, qname) == [b"work"]
    ch.queue_delete(qname)
