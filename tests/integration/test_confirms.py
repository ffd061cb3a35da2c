"""Publisher confirms (confirm.select, basic.ack from the broker, ordering with basic.return)."""

from __future__ import annotations

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import body, commands
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import Broker, channel_error, drain, run
from .rawamqp import RawAMQP, content_header


def raw_publish(raw: RawAMQP, exchange: str, key: str, payload: bytes, mandatory: bool = False) -> None:
    raw.send_frame(commands.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory), 1)
    raw.send_frame(content_header(len(payload)), 1)
    raw.send_frame(body.ContentBody(payload), 1)


def confirmed_tags(acks: list[commands.Basic.Ack], published: int) -> list[int]:
    """Expand (possibly multiple=True) acks into the list of confirmed tags."""
    tags: list[int] = []
    for ack in acks:
        upto = ack.delivery_tag
        if ack.multiple:
            start = tags[-1] + 1 if tags else 1
            tags.extend(range(start, upto + 1))
        else:
            tags.append(upto)
    return tags


@pytest.fixture
def raw_confirm(broker: Broker):
    raw = RawAMQP(broker.host, broker.port)
    raw.handshake()
    raw.open_channel(1)
    raw.send_frame(commands.Confirm.Select(), 1)
    raw.expect(commands.Confirm.SelectOk)
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
    raw.queue = raw.expect(commands.Queue.DeclareOk).queue  # type: ignore[attr-defined]
    yield raw
    raw.close()


def test_every_publish_acked_with_increasing_tags(raw_confirm: RawAMQP) -> None:
    """Tags count from 1 per channel; every publish is acked exactly once, in order."""
    n = 20
    for i in range(n):
        raw_publish(raw_confirm, "", raw_confirm.queue, str(i).encode())  # type: ignore[attr-defined]
    acks: list[commands.Basic.Ack] = []
    while not acks or acks[-1].delivery_tag < n:
        _, frame = raw_confirm.read_frame()
        assert isinstance(frame, commands.Basic.Ack), frame
        acks.append(frame)
    assert confirmed_tags(acks, n) == list(range(1, n + 1))


def test_unroutable_publish_is_acked(raw_confirm: RawAMQP) -> None:
    """A message that routes nowhere (non-mandatory) is still confirmed with basic.ack."""
    raw_publish(raw_confirm, "amq.direct", "no-binding-here", b"x")
    ack = raw_confirm.expect(commands.Basic.Ack)
    assert ack.delivery_tag == 1


def test_mandatory_unroutable_return_then_ack(raw_confirm: RawAMQP) -> None:
    """mandatory + unroutable: basic.return (312 NO_ROUTE) with its content comes before basic.ack."""
    raw_publish(raw_confirm, "amq.direct", "no-binding-here", b"returned", mandatory=True)
    ret = raw_confirm.expect(commands.Basic.Return)
    assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", "amq.direct", "no-binding-here")
    raw_confirm.expect(type(content_header(0)))
    assert raw_confirm.expect(body.ContentBody).value == b"returned"
    ack = raw_confirm.expect(commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (1, False)


def test_confirm_select_nowait(broker: Broker) -> None:
    """confirm.select nowait=True: no select-ok, but publishes are still acked."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Confirm.Select(nowait=True), 1)
        raw_publish(raw, "amq.direct", "nowhere", b"x")
        assert raw.expect(commands.Basic.Ack).delivery_tag == 1


def test_confirm_select_twice_ok(broker: Broker) -> None:
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        for _ in range(2):
            raw.send_frame(commands.Confirm.Select(), 1)
            raw.expect(commands.Confirm.SelectOk)


def test_tx_and_confirm_are_exclusive_406(conn: pika.BlockingConnection) -> None:
    """A channel in confirm mode cannot become transactional and vice versa: 406 PRECONDITION_FAILED."""
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_error(406):
        ch.tx_select()
    ch = conn.channel()
    ch.tx_select()
    with channel_error(406):
        ch.confirm_delivery()


def test_pika_confirm_delivery(cch_conn: tuple[pika.BlockingConnection, BlockingChannel]) -> None:
    """pika: confirmed publish returns normally; mandatory+unroutable raises UnroutableError."""
    _, ch = cch_conn
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"ok", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish("amq.direct", "nowhere.at.all", b"lost", mandatory=True)
    assert info.value.messages[0].body == b"lost"
    assert info.value.messages[0].method.reply_code == 312
    assert drain(ch, q) == [b"ok"]


@pytest.fixture
def cch_conn(conn: pika.BlockingConnection) -> tuple[pika.BlockingConnection, BlockingChannel]:
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def test_confirm_publish_to_missing_exchange_closes_channel(conn: pika.BlockingConnection, xname: str) -> None:
    """In confirm mode a publish to a missing exchange is still a channel error 404 (not a nack)."""
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_error(404):
        ch.basic_publish(xname, "k", b"x")
    assert conn.is_open


def test_aio_pika_publisher_confirms(broker_url: str) -> None:
    """aio-pika publisher_confirms=True: each publish resolves to a Basic.Ack, tags 1, 2, 3..."""

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue("", exclusive=True)
            confirmations = []
            for i in range(5):
                confirmations.append(
                    await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)
                )
            assert all(isinstance(c, commands.Basic.Ack) for c in confirmations)
            assert [c.delivery_tag for c in confirmations] == [1, 2, 3, 4, 5]
            unroutable = await channel.default_exchange.publish(
                aio_pika.Message(b"x"), routing_key=queue.name + ".nope", mandatory=False
            )
            assert isinstance(unroutable, commands.Basic.Ack)
            passive = await channel.declare_queue(queue.name, passive=True)
            assert passive.declaration_result.message_count == 5

    run(body_)


def test_aio_pika_mandatory_unroutable_returned(broker_url: str) -> None:
    """aio-pika: mandatory unroutable publish with confirms raises DeliveryError carrying basic.return."""

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange("amq.direct")
            with pytest.raises(aio_pika.exceptions.DeliveryError) as info:
                await exchange.publish(aio_pika.Message(b"x"), routing_key="nowhere.really", mandatory=True)
            assert info.value.frame is not None
            assert isinstance(info.value.frame, commands.Basic.Return)
            assert info.value.frame.reply_code == 312

    run(body_)
