"""Queue declare/delete/purge/bind semantics, exclusivity and auto-delete."""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, connect, drain, eventually, queue_exists, run, wait_until


def test_server_named_queue(ch: BlockingChannel) -> None:
    """queue.declare with an empty name: the broker picks a name starting with amq.gen-."""
    ok = ch.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-")
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    other = ch.queue_declare("", exclusive=True).method.queue
    assert other != ok.queue


def test_declare_ok_counts(ch: BlockingChannel, qname: str) -> None:
    """declare-ok reports ready messages and consumers; unacked messages are not counted.

    Publisher confirms make sure the messages are enqueued first: RabbitMQ answers the
    stats query ahead of still-queued publishes, so without them the count can lag.
    """
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    for i in range(3):
        ch.basic_publish("", qname, str(i).encode())
    ok = ch.queue_declare(qname, exclusive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (qname, 3, 0)
    ch.basic_get(qname, auto_ack=False)  # one unacked
    ch.basic_consume(qname, lambda *a: None, consumer_tag="c1")
    wait_until(ch.connection, lambda: ch.queue_declare(qname, passive=True).method.message_count == 0)
    ok = ch.queue_declare(qname, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 1)


def test_passive_declare_missing_404(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    with channel_error(404):
        ch.queue_declare(qname, passive=True)
    assert conn.is_open


@pytest.mark.parametrize(
    "first,second",
    [
        ({}, {"durable": True}),
        ({"durable": True}, {}),
        ({}, {"auto_delete": True}),
        ({}, {"arguments": {"x-max-length": 5}}),
        ({"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": 2000}}),
        ({"arguments": {"x-message-ttl": 1000}}, {}),
    ],
    ids=["durable", "not-durable", "auto_delete", "new-x-arg", "changed-x-arg", "dropped-x-arg"],
)
def test_redeclare_inequivalent_406(conn: pika.BlockingConnection, qname: str, first: dict, second: dict) -> None:
    """Redeclaring with different durable/auto_delete/known x-arguments: 406 PRECONDITION_FAILED."""
    ch = conn.channel()
    ch.queue_declare(qname, **first)
    try:
        with channel_error(406):
            ch.queue_declare(qname, **second)
    finally:
        conn.channel().queue_delete(qname)


def test_redeclare_unknown_arguments_accepted(ch: BlockingChannel, qname: str) -> None:
    """Arguments RabbitMQ does not know (x-foo, foo) are not compared on redeclare."""
    ch.queue_declare(qname, exclusive=True)
    ch.queue_declare(qname, exclusive=True, arguments={"x-foo": 1, "foo": "bar"})


@pytest.mark.parametrize("name", ["amq.foo", "amq.gen-custom"])
def test_reserved_amq_queue_name_403(ch: BlockingChannel, uid: str, name: str) -> None:
    """Declaring a queue named amq.*: 403 ACCESS_REFUSED."""
    with channel_error(403):
        ch.queue_declare(f"{name}.{uid}")


def test_passive_amq_queue_name_is_404_not_403(ch: BlockingChannel, uid: str) -> None:
    """A *passive* declare of a missing amq.* queue is just 404."""
    with channel_error(404):
        ch.queue_declare(f"amq.foo.{uid}", passive=True)


@pytest.mark.parametrize("op", ["declare", "declare_nonexclusive", "passive", "consume", "get", "bind", "purge", "delete"])
def test_exclusive_queue_locked_for_other_connections(
    ch: BlockingChannel, broker_url: str, qname: str, op: str
) -> None:
    """Any use of another connection's exclusive queue: 405 RESOURCE_LOCKED (even passive declare)."""
    ch.queue_declare(qname, exclusive=True)
    with connect(broker_url) as other:
        och = other.channel()
        with channel_error(405):
            if op == "declare":
                och.queue_declare(qname, exclusive=True)
            elif op == "declare_nonexclusive":
                och.queue_declare(qname)
            elif op == "passive":
                och.queue_declare(qname, passive=True)
            elif op == "consume":
                och.basic_consume(qname, lambda *a: None)
            elif op == "get":
                och.basic_get(qname)
            elif op == "bind":
                och.queue_bind(qname, "amq.direct", qname)
            elif op == "purge":
                och.queue_purge(qname)
            else:
                och.queue_delete(qname)
    assert ch.queue_declare(qname, passive=True).method.queue == qname


def test_publish_to_other_connections_exclusive_queue_allowed(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    """Publishing into an exclusive queue from another connection is allowed."""
    ch.queue_declare(qname, exclusive=True)
    with connect(broker_url) as other:
        och = other.channel()
        och.confirm_delivery()
        och.basic_publish("", qname, b"from elsewhere", mandatory=True)
    assert drain(ch, qname) == [b"from elsewhere"]


def test_exclusive_queue_usable_from_other_channel_same_connection(conn: pika.BlockingConnection, qname: str) -> None:
    conn.channel().queue_declare(qname, exclusive=True)
    other = conn.channel()
    other.queue_declare(qname, exclusive=True)
    other.basic_publish("", qname, b"x")
    assert drain(other, qname) == [b"x"]


def test_exclusive_queue_deleted_when_connection_closes(broker_url: str, qname: str) -> None:
    c = connect(broker_url)
    c.channel().queue_declare(qname, exclusive=True)
    assert queue_exists(broker_url, qname)
    c.close()
    eventually(lambda: not queue_exists(broker_url, qname))


def test_auto_delete_queue_lifecycle(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    """auto_delete: kept while it never had a consumer; deleted when its last consumer cancels."""
    ch.queue_declare(qname, auto_delete=True)
    try:
        assert queue_exists(broker_url, qname)
        t1 = ch.basic_consume(qname, lambda *a: None)
        t2 = ch.basic_consume(qname, lambda *a: None)
        ch.basic_cancel(t1)
        assert queue_exists(broker_url, qname)
        ch.basic_cancel(t2)
        eventually(lambda: not queue_exists(broker_url, qname))
    finally:
        ch.queue_delete(qname)


def test_auto_delete_queue_deleted_when_consumer_channel_closes(conn: pika.BlockingConnection, broker_url: str, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, auto_delete=True)
    consumer_ch = conn.channel()
    consumer_ch.basic_consume(qname, lambda *a: None)
    consumer_ch.close()
    eventually(lambda: not queue_exists(broker_url, qname))


def test_purge_returns_ready_count(ch: BlockingChannel, qname: str) -> None:
    """queue.purge removes ready messages and reports how many; unacked ones survive and requeue."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    for i in range(4):
        ch.basic_publish("", qname, str(i).encode())
    method, _, _ = ch.basic_get(qname, auto_ack=False)
    assert ch.queue_purge(qname).method.message_count == 3
    assert ch.queue_purge(qname).method.message_count == 0
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert drain(ch, qname) == [b"0"]


def test_purge_missing_queue_404(ch: BlockingChannel, qname: str) -> None:
    with channel_error(404):
        ch.queue_purge(qname)


def test_delete_returns_message_count(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    """delete-ok carries the number of ready messages deleted (unacked are not counted)."""
    ch.confirm_delivery()
    ch.queue_declare(qname)
    for i in range(4):
        ch.basic_publish("", qname, str(i).encode())
    ch.basic_get(qname, auto_ack=False)
    assert ch.queue_delete(qname).method.message_count == 3
    assert not queue_exists(broker_url, qname)


def test_delete_missing_queue_is_ok(ch: BlockingChannel, qname: str) -> None:
    """RabbitMQ: deleting a missing queue is delete-ok with message_count 0."""
    assert ch.queue_delete(qname).method.message_count == 0


def test_delete_if_unused_with_consumer_406(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    ch.basic_consume(qname, lambda *a: None)
    other = conn.channel()
    with channel_error(406):
        other.queue_delete(qname, if_unused=True)
    assert conn.channel().queue_declare(qname, passive=True).method.consumer_count == 1


def test_delete_if_empty_with_messages_406(conn: pika.BlockingConnection, qname: str) -> None:
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    ch.basic_publish("", qname, b"x")
    with channel_error(406):
        ch.queue_delete(qname, if_empty=True)
    assert conn.channel().queue_declare(qname, passive=True).method.message_count == 1


def test_delete_if_empty_ignores_unacked(ch: BlockingChannel, broker_url: str, qname: str) -> None:
    """if_empty looks at ready messages only: a queue holding just an unacked message is deleted."""
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"x")
    ch.basic_get(qname, auto_ack=False)
    assert ch.queue_delete(qname, if_empty=True).method.message_count == 0
    assert not queue_exists(broker_url, qname)


def test_bind_unbind(ch: BlockingChannel, qname: str) -> None:
    ch.queue_declare(qname, exclusive=True)
    ch.queue_bind(qname, "amq.direct", qname)
    ch.basic_publish("amq.direct", qname, b"bound")
    ch.queue_unbind(qname, "amq.direct", qname)
    ch.basic_publish("amq.direct", qname, b"unbound")
    assert drain(ch, qname) == [b"bound"]


def test_bind_is_idempotent(ch: BlockingChannel, qname: str) -> None:
    """Binding twice with the same key creates one binding: one copy; one unbind removes it."""
    ch.queue_declare(qname, exclusive=True)
    ch.queue_bind(qname, "amq.direct", qname)
    ch.queue_bind(qname, "amq.direct", qname)
    ch.basic_publish("amq.direct", qname, b"once")
    ch.queue_unbind(qname, "amq.direct", qname)
    ch.basic_publish("amq.direct", qname, b"gone")
    assert drain(ch, qname) == [b"once"]


def test_empty_queue_name_means_last_declared(ch: BlockingChannel) -> None:
    """An empty queue name in bind/purge/get refers to the channel's last declared queue."""
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", "amq.direct", q)
    ch.basic_publish("amq.direct", q, b"a")
    ch.basic_publish("", q, b"b")
    assert ch.basic_get("", auto_ack=True)[2] == b"a"
    assert ch.queue_purge("").method.message_count == 1


def test_empty_queue_name_without_prior_declare_404(ch: BlockingChannel) -> None:
    """Empty queue name with no queue declared on the channel: 404 NOT_FOUND (RabbitMQ; the spec says 530)."""
    with channel_error(404):
        ch.queue_purge("")


def test_queue_name_255_bytes(ch: BlockingChannel, uid: str) -> None:
    name = (uid + "q" * 255)[:255]
    assert ch.queue_declare(name, exclusive=True).method.queue == name


def test_aio_pika_queue_declare_and_errors(broker_url: str, qname: str) -> None:
    """aio-pika: declare_queue/passive/delete with the same semantics."""

    async def body() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(qname, auto_delete=False)
            await channel.default_exchange.publish(aio_pika.Message(b"1"), routing_key=qname)
            again = await channel.declare_queue(qname, passive=True)
            assert again.declaration_result.message_count == 1
            assert await queue.delete(if_unused=False, if_empty=False) is not None
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(qname, passive=True)
            channel = await connection.channel()
            await channel.declare_queue(qname + ".d", durable=False, auto_delete=True)
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
                await channel.declare_queue(qname + ".d", durable=True, auto_delete=True)
            channel = await connection.channel()
            await channel.queue_delete(qname + ".d")

    run(body)


def test_redeclare_server_named_queue_by_name_403(conn: pika.BlockingConnection) -> None:
    """Even the owner cannot non-passively redeclare an amq.gen-* queue by name: 403
    ACCESS_REFUSED (the amq. prefix check runs before the existing-queue lookup); passive works."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert ch.queue_declare(q, passive=True).method.queue == q
    with channel_error(403):
        ch.queue_declare(q, exclusive=True)
    assert conn.channel().queue_declare(q, passive=True).method.queue == q
