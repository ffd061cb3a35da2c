"""Exactly-once read-process-write over a stream (smartbroker extension): a group member
consumes, publishes its result and acks inside one transaction; a crash before
tx.commit undoes both, so the next member redoes the work and the result appears once."""

from __future__ import annotations

import time

import pika
import pytest

from tests.integration.helpers import connect, drain

pytestmark = pytest.mark.extension


def _one_delivery(conn: pika.BlockingConnection, ch, queue: str, group: str):
    got: list = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append((m, p, b)),
                     arguments={"x-consumer-group": group, "x-stream-offset": "first"})
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got, "no delivery"
    return got[0]


def test_consume_process_publish_ack_in_a_transaction(broker_url: str, qname: str, uid: str) -> None:
    events, results, group = qname, f"{qname}.results", f"billing-{uid}"
    setup = connect(broker_url)
    sch = setup.channel()
    sch.queue_declare(events, durable=True, arguments={"x-queue-type": "stream"})
    sch.queue_declare(results, durable=True)
    sch.confirm_delivery()
    sch.basic_publish("", events, b"order-1")

    # a worker does the work in a transaction, then crashes before committing
    crashing = connect(broker_url)
    cch = crashing.channel()
    cch.basic_qos(prefetch_count=1)
    cch.tx_select()
    method, props, body = _one_delivery(crashing, cch, events, group)
    assert props.headers["x-stream-offset"] == 0
    cch.basic_publish("", results, b"invoice for " + body)
    cch.basic_ack(method.delivery_tag)
    crashing.close()  # no tx.commit: neither the result nor the offset commit happened
    assert drain(sch, results) == []

    # the next worker gets the same event again and this time commits
    worker = connect(broker_url)
    wch = worker.channel()
    wch.basic_qos(prefetch_count=1)
    wch.tx_select()
    method, props, body = _one_delivery(worker, wch, events, group)
    assert (body, props.headers["x-stream-offset"], method.redelivered) == (b"order-1", 0, True)
    wch.basic_publish("", results, b"invoice for " + body)
    wch.basic_ack(method.delivery_tag)
    wch.tx_commit()
    worker.close()

    # exactly one result, and the group has moved past the event for good
    assert drain(sch, results) == [b"invoice for order-1"]
    sch.basic_publish("", events, b"order-2")
    later = connect(broker_url)
    lch = later.channel()
    lch.basic_qos(prefetch_count=1)
    _m, props, body = _one_delivery(later, lch, events, group)
    assert (body, props.headers["x-stream-offset"]) == (b"order-2", 1)
    later.close()
    sch.queue_delete(events)
    sch.queue_delete(results)
    setup.close()
