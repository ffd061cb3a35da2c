"""Quorum queues as a client sees them on one RabbitMQ 3.10 node: the arguments they refuse
or accept at declare, the consumer arguments and global QoS they refuse, queue.delete's
flags, the order of requeued messages and ``x-delivery-count``/``x-delivery-limit`` on
consumer loss. Every test here passes against RabbitMQ 3.10 (SMARTBROKER_TEST_URL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.conftest import BrokerProcess

from .deadletter_helpers import get_one
from .helpers import channel_error, connect, connection_error, wait_until
from .lifecycle_helpers import api_base, api_request, collect_one, declare_dlq, dlx_args

QQ = {"x-queue-type": "quorum"}


@pytest.fixture
def quorum(broker_url: str, qname: str) -> Iterator[str]:
    """Name for a quorum queue the test declares; deleted afterwards."""
    yield qname + ".qq"
    with connect(broker_url) as c:
        c.channel().queue_delete(qname + ".qq")


def declare_refused(conn: pika.BlockingConnection, name: str, arguments: dict[str, Any]) -> str:
    with channel_error(406) as err:
        conn.channel().queue_declare(name, durable=True, arguments={**QQ, **arguments})
    return err[0].reply_text


# -- declare: what quorum queues refuse and accept -------------------------------------------

@pytest.mark.parametrize("arg, value", [
    ("x-max-priority", 5), ("x-queue-mode", "lazy"), ("x-queue-version", 2),
    ("x-max-age", "1D"), ("x-stream-max-segment-size-bytes", 1000),
    ("x-initial-cluster-size", 1), ("x-queue-master-locator", "min-masters"),
])
def test_arguments_of_other_queue_types_are_refused(conn: pika.BlockingConnection, quorum: str,
                                                    arg: str, value: Any) -> None:
    assert declare_refused(conn, quorum, {arg: value}) == (
        f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{quorum}' in vhost '/' "
        "of queue type rabbit_quorum_queue")


@pytest.mark.parametrize("arg, value, why", [
    ("x-dead-letter-strategy", "sometimes", "invalid_dlx_strategy"),
    ("x-dead-letter-strategy", 1, "{unacceptable_type,signedint}"),
    ("x-quorum-initial-group-size", 0, "{value_zero,0}"),
    ("x-quorum-initial-group-size", -2, "{value_negative,-2}"),
    ("x-quorum-initial-group-size", "3", '"expected integer, got longstr"'),
    ("x-max-in-memory-length", -1, "{value_negative,-1}"),
    ("x-max-in-memory-bytes", "10", '"expected integer, got longstr"'),
])
def test_quorum_arguments_are_validated(conn: pika.BlockingConnection, quorum: str, arg: str,
                                        value: Any, why: str) -> None:
    assert declare_refused(conn, quorum, {arg: value}) == (
        f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{quorum}' in vhost '/': {why}")


@pytest.mark.parametrize("arguments", [
    {"x-quorum-initial-group-size": 3}, {"x-quorum-initial-group-size": 1},
    {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
     "x-dead-letter-exchange": "amq.fanout"},
    {"x-dead-letter-strategy": "at-least-once", "x-dead-letter-exchange": "amq.fanout"},
    {"x-dead-letter-strategy": "at-most-once"},
    {"x-max-in-memory-length": 10, "x-max-in-memory-bytes": 1000},
    {"x-overflow": "reject-publish-dlx"},
    {"x-single-active-consumer": True, "x-queue-leader-locator": "balanced"},
    {"x-unknown-to-rabbitmq": 1},
    {"x-delivery-limit": -1}, {"x-delivery-limit": "abc"},  # 3.10 does not check it
])
def test_quorum_arguments_are_accepted(ch: BlockingChannel, quorum: str,
                                       arguments: dict[str, Any]) -> None:
    ok = ch.queue_declare(quorum, durable=True, arguments={**QQ, **arguments})
    assert ok.method.queue == quorum


def test_redeclare_with_another_quorum_argument_is_inequivalent(conn: pika.BlockingConnection,
                                                                quorum: str) -> None:
    conn.channel().queue_declare(quorum, durable=True,
                                 arguments={**QQ, "x-max-in-memory-length": 5})
    text = declare_refused(conn, quorum, {"x-max-in-memory-length": 6})
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'x-max-in-memory-length' for queue "
                    f"'{quorum}' in vhost '/': received '6' but current is '5'")


def test_server_named_quorum_queue_is_refused(conn: pika.BlockingConnection) -> None:
    text = declare_refused(conn, "", {})
    assert text == (
        "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue")


# -- queue.delete flags, consumers ------------------------------------------------------------

@pytest.mark.parametrize("flag", ["if_unused", "if_empty"])
def test_delete_with_if_flags_is_not_implemented(conn: pika.BlockingConnection, quorum: str,
                                                 flag: str) -> None:
    conn.channel().queue_declare(quorum, durable=True, arguments=QQ)
    with connection_error(540) as err:
        conn.channel().queue_delete(quorum, **{flag: True})
    assert err[0].reply_text == (
        f"NOT_IMPLEMENTED - cannot delete queue '{quorum}' in vhost '/'. queue.delete operations "
        f"with {flag.replace('_', '-')} flag set are not supported by quorum queues")


def test_global_qos_consumer_is_refused(conn: pika.BlockingConnection, quorum: str) -> None:
    """A consumer under a global prefetch limit: RabbitMQ closes the connection (540)."""
    chan = conn.channel()
    chan.queue_declare(quorum, durable=True, arguments=QQ)
    chan.basic_qos(prefetch_count=10, global_qos=True)
    with connection_error(540) as err:
        chan.basic_consume(quorum, lambda *a: None)
    assert err[0].reply_text == (f"NOT_IMPLEMENTED - queue '{quorum}' in vhost '/' does not "
                                 "support global qos")


def test_global_qos_zero_consumer_is_accepted(ch: BlockingChannel, quorum: str) -> None:
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.basic_qos(prefetch_count=0, global_qos=True)
    assert ch.basic_consume(quorum, lambda *a: None)


@pytest.mark.parametrize("arg, value", [("x-stream-offset", "first"),
                                        ("x-cancel-on-ha-failover", True)])
def test_consumer_arguments_of_other_types_are_refused(conn: pika.BlockingConnection, quorum: str,
                                                       arg: str, value: Any) -> None:
    chan = conn.channel()
    chan.queue_declare(quorum, durable=True, arguments=QQ)
    with channel_error(406) as err:
        chan.basic_consume(quorum, lambda *a: None, arguments={arg: value})
    assert err[0].reply_text == (f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{quorum}' "
                                 "in vhost '/' of queue type rabbit_quorum_queue")


# -- requeue order, delivery count on consumer loss -------------------------------------------

def test_requeued_messages_come_back_first_in_return_order(ch: BlockingChannel, quorum: str) -> None:
    """RabbitMQ 3.10's rabbit_fifo puts a returned message at the back of the queue, in the order
    they were returned (a classic queue puts them back at their place by age)."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", quorum, f"m{i}".encode())
    tags = {}
    for _ in range(3):
        got = get_one(ch, quorum)
        tags[got.body] = got.method.delivery_tag
    ch.basic_nack(tags[b"m2"], requeue=True)
    ch.basic_reject(tags[b"m0"], requeue=True)
    order = []
    for _ in range(4):
        got = get_one(ch, quorum)
        order.append(got.body)
        ch.basic_ack(got.method.delivery_tag)
    ch.basic_ack(tags[b"m1"])
    assert order == [b"m3", b"m4", b"m2", b"m0"]


def test_channel_loss_counts_as_a_delivery(broker_url: str, ch: BlockingChannel, quorum: str) -> None:
    """Messages left unacked when a channel closes come back with x-delivery-count raised, and
    count toward x-delivery-limit (RabbitMQ 3.10 counts every return)."""
    dlq = declare_dlq(ch, quorum + ".dlq")
    try:
        ch.queue_declare(quorum, durable=True, arguments=dlx_args(dlq, **QQ, **{"x-delivery-limit": 1}))
        ch.confirm_delivery()
        ch.basic_publish("", quorum, b"lost")
        counts = []
        for _ in range(2):
            with connect(broker_url) as other:
                chan = other.channel()
                got = get_one(chan, quorum)
                counts.append((got.method.redelivered, got.headers.get("x-delivery-count")))
        got = collect_one(ch, dlq)
        assert got.body == b"lost"
        assert got.headers["x-death"][0]["reason"] == "delivery_limit"
        assert counts == [(False, 0), (True, 1)]
    finally:
        ch.queue_delete(quorum + ".dlq")


def test_reject_publish_dlx_is_served_as_drop_head(ch: BlockingChannel, quorum: str) -> None:
    """rabbit_quorum_queue accepts x-overflow reject-publish-dlx but runs drop-head: both
    publishes are confirmed, the oldest is dead-lettered (reason maxlen)."""
    dlq = declare_dlq(ch, quorum + ".dlq")
    try:
        ch.queue_declare(quorum, durable=True, arguments=dlx_args(
            dlq, **QQ, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}))
        ch.confirm_delivery()
        ch.basic_publish("", quorum, b"a")
        ch.basic_publish("", quorum, b"b")  # confirmed: an unroutable nack would raise
        dead = collect_one(ch, dlq)
        assert dead.body == b"a"
        assert dead.headers["x-death"][0]["reason"] == "maxlen"
        assert get_one(ch, quorum).body == b"b"
    finally:
        ch.queue_delete(quorum + ".dlq")


def test_management_shows_quorum_leader_members_online(broker: Any, ch: BlockingChannel,
                                                        quorum: str) -> None:
    """/api/queues: type quorum; on one node, that node leads and is the only member, online."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    base = api_base(broker)
    status, overview = api_request(base, "GET", "/api/overview")
    assert status == 200
    status, q = api_request(base, "GET", f"/api/queues/%2F/{quote(quorum, safe='')}")
    assert status == 200
    node = overview["node"]
    assert (q["type"], q["leader"], q["members"], q["online"]) == ("quorum", node, [node], [node])


def test_transient_messages_survive_a_kill(own_broker: BrokerProcess, uid: str) -> None:
    """A quorum queue keeps every message on disk, delivery mode 1 too (RabbitMQ's Raft log
    does): confirmed transient messages, one acked and one delivered but unacked, are there
    after a kill -9, the unacked one redelivered and counted once, and still delivery mode 1
    (RabbitMQ 3.10 checked by hand across a restart: it keeps the delivery counts)."""
    name = f"qq.transient.{uid}"
    c = connect(own_broker.url)
    chan = c.channel()
    chan.queue_declare(name, durable=True, arguments=QQ)
    chan.confirm_delivery()
    for body in (b"t0", b"t1", b"t2"):
        chan.basic_publish("", name, body, pika.BasicProperties(delivery_mode=1))
    acked = get_one(chan, name)
    chan.basic_ack(acked.method.delivery_tag)
    get_one(chan, name)  # t1: delivered, never acked
    chan.queue_declare(name, passive=True)  # a round trip: the ack has been read
    own_broker.kill()
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        c.close()
    own_broker.start()
    with connect(own_broker.url) as c:
        chan = c.channel()
        got = sorted((get_one(chan, name) for _ in range(2)), key=lambda g: g.body)
        assert [(g.body, g.method.redelivered, g.headers.get("x-delivery-count"),
                 g.props.delivery_mode) for g in got] == [(b"t1", True, 1, 1), (b"t2", False, 0, 1)]
        assert chan.basic_get(name, auto_ack=True)[0] is None


def test_a_closed_channels_deliveries_come_back_first(broker_url: str, ch: BlockingChannel,
                                                      quorum: str) -> None:
    """rabbit_fifo returns a lost consumer's messages ahead of the waiting ones (by age),
    while a nack with requeue sends its message to the back."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", quorum, f"m{i}".encode())
    with connect(broker_url) as other:
        chan = other.channel()
        chan.basic_qos(prefetch_count=3)
        got: list[tuple[bytes, int]] = []
        chan.basic_consume(quorum, lambda c, m, p, body: got.append((body, m.delivery_tag)))
        wait_until(other, lambda: len(got) == 3)
        chan.basic_reject(dict(got)[b"m1"], requeue=True)  # to the back: behind m4
        wait_until(other, lambda: len(got) == 4)  # the freed credit takes m3
        assert [body for body, _ in got] == [b"m0", b"m1", b"m2", b"m3"]
        chan.close()
    order = []
    for _ in range(5):
        d = get_one(ch, quorum)
        order.append((d.body, d.method.redelivered))
    ch.basic_ack(0, multiple=True)
    assert order == [(b"m0", True), (b"m2", True), (b"m3", True), (b"m4", False), (b"m1", True)]


def test_prefetch_zero_means_2000(conn: pika.BlockingConnection, ch: BlockingChannel,
                                  quorum: str) -> None:
    """rabbit_quorum_queue:consume makes "no prefetch limit" 2000: an acking consumer without
    basic.qos holds at most 2000 unacked messages; one ack lets one more through."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.confirm_delivery()
    for _ in range(2010):
        ch.basic_publish("", quorum, b"x")
    chan = conn.channel()
    tags: list[int] = []
    chan.basic_consume(quorum, lambda c, m, p, body: tags.append(m.delivery_tag))
    wait_until(conn, lambda: len(tags) == 2000, timeout=20)
    assert chan.queue_declare(quorum, passive=True).method.message_count == 10
    assert len(tags) == 2000
    chan.basic_ack(tags[0])
    wait_until(conn, lambda: len(tags) == 2001)
    assert chan.queue_declare(quorum, passive=True).method.message_count == 9


def test_recover_requeues_to_the_back(broker_url: str, ch: BlockingChannel, quorum: str) -> None:
    """basic.recover(requeue) settles like a nack with requeue: to the back, counted."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", quorum, f"m{i}".encode())
    with connect(broker_url) as other:
        chan = other.channel()
        assert [get_one(chan, quorum).body for _ in range(2)] == [b"m0", b"m1"]
        chan.basic_recover(requeue=True)
    order = []
    for _ in range(3):
        d = get_one(ch, quorum)
        order.append((d.body, d.method.redelivered, d.headers.get("x-delivery-count")))
    ch.basic_ack(0, multiple=True)
    assert order == [(b"m2", False, 0), (b"m0", True, 1), (b"m1", True, 1)]


def test_redeclare_without_initial_group_size_is_inequivalent(conn: pika.BlockingConnection,
                                                              quorum: str) -> None:
    conn.channel().queue_declare(quorum, durable=True,
                                 arguments={**QQ, "x-quorum-initial-group-size": 3})
    assert declare_refused(conn, quorum, {}) == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue "
        f"'{quorum}' in vhost '/': received none but current is the value '3' of type 'signedint'")


def test_reject_publish_blocks_until_80_percent(ch: BlockingChannel, quorum: str) -> None:
    """rabbit_fifo accepts the publish that takes the queue past x-max-length, then nacks
    publishes until the ready messages are down to 80 % of the limit."""
    ch.queue_declare(quorum, durable=True, arguments={
        **QQ, "x-max-length": 10, "x-overflow": "reject-publish"})
    ch.confirm_delivery()

    def publish() -> str:
        try:
            ch.basic_publish("", quorum, b"m")
        except pika.exceptions.NackError:
            return "nack"
        return "ack"

    assert [publish() for _ in range(12)] == ["ack"] * 11 + ["nack"]
    outcomes = []
    for _ in range(3):
        assert ch.basic_get(quorum, auto_ack=True)[0] is not None
        outcomes.append(publish())
    assert outcomes == ["nack", "nack", "ack"]  # 10, 9: still refused; 8 = 80 %: accepted
    assert ch.queue_declare(quorum, passive=True).method.message_count == 9


def test_single_active_consumer_hands_over_at_cancel(broker_url: str, ch: BlockingChannel,
                                                     quorum: str) -> None:
    """rabbit_fifo activates the waiting consumer as soon as the active one cancels, though
    that one still holds unacked messages (a classic queue waits for them)."""
    ch.queue_declare(quorum, durable=True, arguments={**QQ, "x-single-active-consumer": True})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", quorum, f"m{i}".encode())
    with connect(broker_url) as a, connect(broker_url) as b:
        cha, chb = a.channel(), b.channel()
        cha.basic_qos(prefetch_count=2)
        chb.basic_qos(prefetch_count=2)
        got_a: list[bytes] = []
        got_b: list[bytes] = []
        tag = cha.basic_consume(quorum, lambda c, m, p, body: got_a.append(body))
        wait_until(a, lambda: len(got_a) == 2)
        chb.basic_consume(quorum, lambda c, m, p, body: got_b.append(body))
        cha.basic_cancel(tag)  # m0 and m1 stay unacked on a's channel
        wait_until(b, lambda: len(got_b) == 2)
        assert (got_a, got_b) == ([b"m0", b"m1"], [b"m2", b"m3"])


def test_reject_publish_unblocks_at_80_percent_even_if_requeues_refill(ch: BlockingChannel,
                                                                        quorum: str) -> None:
    """The block ends when the queue gets down to 80 %, not at the next publish: taking three
    (11 -> 8 ready) unblocks, even after two of them are requeued (10 ready) again."""
    ch.queue_declare(quorum, durable=True, arguments={
        **QQ, "x-max-length": 10, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    for _ in range(11):
        ch.basic_publish("", quorum, b"m")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", quorum, b"m")
    taken = [get_one(ch, quorum).method.delivery_tag for _ in range(3)]
    ch.basic_nack(taken[0], requeue=True)
    ch.basic_nack(taken[1], requeue=True)
    ch.basic_publish("", quorum, b"m")  # accepted: 10 ready, not blocked any more
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", quorum, b"m")  # 11: blocked again


def test_max_in_memory_limits_change_nothing_a_client_sees(broker: Any, conn: pika.BlockingConnection,
                                                           ch: BlockingChannel, quorum: str) -> None:
    """3.10's rabbit_fifo keeps no message bodies in memory (query_in_memory_usage is
    {0, 0}): x-max-in-memory-length/-bytes are accepted and kept, every message is there,
    and /api/queues shows messages_ram and message_bytes_ram 0."""
    arguments = {**QQ, "x-max-in-memory-length": 0, "x-max-in-memory-bytes": 0}
    ch.queue_declare(quorum, durable=True, arguments=arguments)
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", quorum, body)
    base = api_base(broker)
    path = f"/api/queues/%2F/{quote(quorum, safe='')}"

    def shown() -> bool:
        return api_request(base, "GET", path)[1].get("messages") == 3
    wait_until(conn, shown, timeout=20.0)  # RabbitMQ refreshes queue stats every 5 s
    q = api_request(base, "GET", path)[1]
    assert (q["messages_ram"], q["message_bytes_ram"], q["arguments"]) == (0, 0, arguments)
    assert [get_one(ch, quorum).body for _ in range(3)] == [b"a", b"b", b"c"]


def test_expired_messages_leave_only_from_the_head(conn: pika.BlockingConnection, ch: BlockingChannel,
                                                   quorum: str) -> None:
    """rabbit_fifo drops an expired message only at the head: one behind a live message
    stays (counted) until that one is taken, then goes to the DLX at once. A control
    queue's head message, published later with the same TTL, shows the time has passed."""
    dlq = declare_dlq(ch, quorum + ".dlq")
    control = quorum + ".control"
    try:
        for name in (quorum, control):
            ch.queue_declare(name, durable=True, arguments=dlx_args(dlq, **QQ))
        short = pika.BasicProperties(expiration="100")
        ch.basic_publish("", quorum, b"m1")
        ch.basic_publish("", quorum, b"m2", short)
        ch.basic_publish("", quorum, b"m3")
        ch.basic_publish("", control, b"c", short)

        def dead() -> int:
            return ch.queue_declare(dlq, passive=True).method.message_count
        wait_until(conn, lambda: dead() == 1)  # the control expired: so did m2's TTL
        assert ch.queue_declare(quorum, passive=True).method.message_count == 3
        assert get_one(ch, quorum).body == b"m1"
        wait_until(conn, lambda: dead() == 2)  # m2 reached the head, and went
        assert [get_one(ch, dlq).body for _ in range(2)] == [b"c", b"m2"]
        assert get_one(ch, quorum).body == b"m3"
    finally:
        ch.queue_delete(control)


def test_prefetch_zero_shows_as_zero(broker: Any, conn: pika.BlockingConnection, ch: BlockingChannel,
                                     quorum: str) -> None:
    """The 2000 is internal: /api/consumers shows the consumer's prefetch_count 0."""
    ch.queue_declare(quorum, durable=True, arguments=QQ)
    ch.basic_consume(quorum, lambda c, m, p, body: None, consumer_tag="zero")
    base = api_base(broker)
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        found[:] = [c for c in api_request(base, "GET", "/api/consumers")[1]
                    if c["queue"]["name"] == quorum]
        return bool(found)
    wait_until(conn, listed, timeout=20.0)
    assert (found[0]["consumer_tag"], found[0]["prefetch_count"]) == ("zero", 0)
