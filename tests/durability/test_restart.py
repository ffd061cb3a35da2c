"""Persistent messages across a graceful restart and across kill -9 (after confirms).

What a user sees: confirmed persistent messages in durable queues come back in order with
the properties they were published with; unacked ones come back ``redelivered``; acked,
purged, transient and deleted-queue messages do not come back.

``restart`` is a graceful stop (SIGTERM, checked to have been one) and a start;
``kill`` is kill -9 and a start. After kill -9 only what was confirmed is promised, so
every kill variant confirms (or follows its settlements by a confirmed publish on the
same connection) before killing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pika
import pytest

pytestmark = pytest.mark.extension

MODES = ["restart", "kill"]


@pytest.fixture
def sb(shared_sb):
    """One broker for the module: each test bounces it itself and checks only the objects
    it named, so a fresh broker per test proved nothing more and cost a start and a stop."""
    return shared_sb


def bounce(sb, mode: str) -> None:
    if mode == "restart":
        sb.restart()
    else:
        sb.kill_restart()


def rich_props(i: int) -> dict:
    """Every basic property, and a headers table with nested and typed values."""
    return dict(
        content_type="application/json",
        content_encoding="identity",
        headers={
            "i": i,
            "big": 2**40 + i,
            "neg": -7,
            "price": Decimal("12.34"),
            "ok": True,
            "nothing": None,
            "raw": b"\x00\xffbytes",
            "text": "h\u00e9llo",
            "when": dt.datetime(2024, 2, 29, 12, 30, 45),
            "list": [1, "two", [3, {"four": 4}], {"five": b"5"}],
            "nested": {"a": {"b": {"c": ["deep", i]}}, "empty": {}},
        },
        priority=i % 10,
        correlation_id=f"corr-{i}",
        reply_to="replies",
        expiration="3600000",
        message_id=f"msg-{i}",
        timestamp=1_700_000_000 + i,
        type="order.created",
        user_id="guest",
        app_id="durability-suite",
    )


@pytest.mark.parametrize("mode", MODES)
def test_messages_survive_in_order_with_identical_properties(sb, qname: str, mode: str) -> None:
    """The same message is routed to two durable queues (written once). One is read before
    the restart as the reference; the other after it must match field for field."""
    conn = sb.connect()
    ch = conn.channel()
    ex = f"{qname}.x"
    ch.exchange_declare(ex, "direct", durable=True)
    for q in (qname, f"{qname}.ref"):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, ex, "k")
    ch.confirm_delivery()
    bodies = [f"body-{i}".encode() * (i + 1) for i in range(30)] + [b"", b"\x00" * 70_000]
    for i, body in enumerate(bodies):
        ch.basic_publish(ex, "k", body, pika.BasicProperties(delivery_mode=2, **rich_props(i)))
    conn.close()
    reference = sb.drain(f"{qname}.ref")
    assert [m.body for m in reference] == bodies

    bounce(sb, mode)

    got = sb.drain(qname)
    assert [m.body for m in got] == bodies
    for before, after in zip(reference, got, strict=True):
        assert vars(after.props) == vars(before.props)
        assert (after.exchange, after.routing_key) == (ex, "k")
        assert after.redelivered is False
    first = got[1].props
    assert first.headers["nested"] == {"a": {"b": {"c": ["deep", 1]}}, "empty": {}}
    assert first.headers["price"] == Decimal("12.34")
    assert first.headers["when"] == dt.datetime(2024, 2, 29, 12, 30, 45, tzinfo=dt.UTC)
    assert (first.priority, first.correlation_id, first.timestamp) == (1, "corr-1", 1_700_000_001)
    assert sb.message_count(f"{qname}.ref") == 0  # acked before the restart: gone


@pytest.mark.parametrize("mode", MODES)
def test_unacked_messages_come_back_redelivered(sb, qname: str, mode: str) -> None:
    sb.declare(qname)
    sb.publish(qname, [f"m{i}".encode() for i in range(10)])
    conn = sb.connect()
    ch = conn.channel()
    for i in range(4):  # delivered, never acked
        method, _props, body = ch.basic_get(qname, auto_ack=False)
        assert body == f"m{i}".encode() and not method.redelivered
    if mode == "kill":
        # A later confirmed publish on the same connection: the deliveries before it are
        # recorded by the time it is confirmed.
        pub = conn.channel()
        pub.confirm_delivery()
        pub.basic_publish("", qname, b"m10", pika.BasicProperties(delivery_mode=2))
        sb.kill_restart()
    else:
        sb.keep_answering(conn)
        sb.restart()  # closes the connection: the 4 are requeued, then the broker stops
    got = sb.drain(qname)
    expected = [f"m{i}".encode() for i in range(10 if mode == "restart" else 11)]
    assert [m.body for m in got] == expected
    assert [m.redelivered for m in got] == [True] * 4 + [False] * (len(expected) - 4)


@pytest.mark.parametrize("mode", MODES)
def test_acked_messages_do_not_come_back(sb, qname: str, mode: str) -> None:
    sb.declare(qname)
    sb.publish(qname, [f"m{i}".encode() for i in range(10)])
    conn = sb.connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=5)
    acked = []
    for method, _props, body in ch.consume(qname, inactivity_timeout=5):
        assert method is not None
        ch.basic_ack(method.delivery_tag)
        acked.append(body)
        if len(acked) == 5:
            break
    ch.cancel()
    # Acks are not confirmed in AMQP. A later confirmed publish on the same connection is:
    # the broker handles frames in order, so the acks are on disk once it is confirmed.
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish("", qname, b"after-acks", pika.BasicProperties(delivery_mode=2))
    if mode == "restart":
        conn.close()
    bounce(sb, mode)
    got = sb.drain(qname)
    assert acked == [f"m{i}".encode() for i in range(5)]
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(5, 10)] + [b"after-acks"]
    assert not any(m.redelivered for m in got[-1:])


@pytest.mark.parametrize("mode", MODES)
def test_transient_messages_do_not_survive(sb, qname: str, mode: str) -> None:
    sb.declare(qname)
    conn = sb.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(20):
        mode_flag = 2 if i % 2 else 1
        ch.basic_publish("", qname, f"m{i}".encode(), pika.BasicProperties(delivery_mode=mode_flag))
    conn.close()
    assert sb.message_count(qname) == 20
    bounce(sb, mode)
    got = sb.drain(qname)
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(1, 20, 2)]
    assert all(m.props.delivery_mode == 2 for m in got)


@pytest.mark.parametrize("mode", MODES)
def test_persistent_message_in_transient_queue_does_not_survive(sb, qname: str, mode: str) -> None:
    """A fanout to a durable and a transient queue: only the durable copy comes back."""
    conn = sb.connect()
    ch = conn.channel()
    ex = f"{qname}.fan"
    ch.exchange_declare(ex, "fanout", durable=True)
    ch.queue_declare(qname, durable=True)
    ch.queue_declare(f"{qname}.t", durable=False)
    ch.queue_bind(qname, ex)
    ch.queue_bind(f"{qname}.t", ex)
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"both", pika.BasicProperties(delivery_mode=2))
    conn.close()
    bounce(sb, mode)
    assert [m.body for m in sb.drain(qname)] == [b"both"]
    assert not sb.queue_exists(f"{qname}.t")


@pytest.mark.parametrize("mode", MODES)
def test_ack_in_one_queue_keeps_the_copies_in_others(sb, qname: str, mode: str) -> None:
    """One stored message, three durable queues: settling one copy keeps the other two."""
    conn = sb.connect()
    ch = conn.channel()
    ex = f"{qname}.fan"
    ch.exchange_declare(ex, "fanout", durable=True)
    queues = [f"{qname}.{i}" for i in range(3)]
    for q in queues:
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, ex)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish(ex, "", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    assert len(sb.drain(queues[0])) == 5  # acked there
    conn = sb.connect()
    conn.channel().queue_purge(queues[1])
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish("", queues[2], b"later", pika.BasicProperties(delivery_mode=2))
    if mode == "restart":
        conn.close()
    bounce(sb, mode)
    assert sb.drain(queues[0]) == []
    assert sb.drain(queues[1]) == []
    assert [m.body for m in sb.drain(queues[2])] == [f"m{i}".encode() for i in range(5)] + [b"later"]


@pytest.mark.parametrize("mode", MODES)
def test_purge_is_durable(sb, qname: str, mode: str) -> None:
    sb.declare(qname)
    sb.publish(qname, [f"old{i}".encode() for i in range(50)])
    conn = sb.connect()
    assert conn.channel().queue_purge(qname).method.message_count == 50
    conn.close()
    sb.publish(qname, [b"new0", b"new1"])  # confirmed: the purge before it is on disk too
    bounce(sb, mode)
    assert [m.body for m in sb.drain(qname)] == [b"new0", b"new1"]


@pytest.mark.parametrize("mode", MODES)
def test_messages_of_a_deleted_queue_do_not_come_back(sb, qname: str, mode: str) -> None:
    """Deleted, then declared again under the same name: the old messages stay gone."""
    sb.declare(qname)
    sb.declare(f"{qname}.gone")
    sb.publish(qname, [b"old"] * 5)
    sb.publish(f"{qname}.gone", [b"old"] * 5)
    conn = sb.connect()
    ch = conn.channel()
    ch.queue_delete(qname)
    ch.queue_delete(f"{qname}.gone")
    ch.queue_declare(qname, durable=True)
    conn.close()
    sb.publish(qname, [b"new"])
    bounce(sb, mode)
    assert [m.body for m in sb.drain(qname)] == [b"new"]
    assert not sb.queue_exists(f"{qname}.gone")


@pytest.mark.parametrize("mode", MODES)
def test_priority_queue_keeps_priority_order(sb, qname: str, mode: str) -> None:
    sb.declare(qname, arguments={"x-max-priority": 9})
    conn = sb.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    prios = [1, 5, 9, 0, 5, 3, 9, 1]
    for i, p in enumerate(prios):
        ch.basic_publish("", qname, f"{p}:{i}".encode(), pika.BasicProperties(delivery_mode=2, priority=p))
    conn.close()
    bounce(sb, mode)
    got = [m.body.decode() for m in sb.drain(qname)]
    expected = [f"{p}:{i}" for i, p in sorted(enumerate(prios), key=lambda t: (-t[1], t[0]))]
    assert got == expected


def test_survives_two_restarts_and_a_kill(sb, qname: str) -> None:
    """Recovery leaves a store that recovers again: restart, kill, restart, with settlements
    between them."""
    sb.declare(qname)
    sb.publish(qname, [f"a{i}".encode() for i in range(6)])
    sb.restart()
    conn = sb.connect()
    ch = conn.channel()
    method, _p, body = ch.basic_get(qname)
    assert body == b"a0"
    ch.basic_ack(method.delivery_tag)
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish("", qname, b"b0", pika.BasicProperties(delivery_mode=2))
    sb.kill_restart()
    sb.publish(qname, [b"b1"])
    sb.restart()
    assert [m.body for m in sb.drain(qname)] == [f"a{i}".encode() for i in range(1, 6)] + [b"b0", b"b1"]
