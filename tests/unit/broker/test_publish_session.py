"""The publish session (broker/publish.py) through Channel.publish, with a fake connection:
RabbitMQ's refusals (code and text), routing, mandatory returns, transactions, idempotent
producers, direct reply-to and the alarm block. No socket, no event loop."""

from __future__ import annotations

import pytest
from broker_fakes import FakeConnection, new_broker, publish
from pamqp import commands

from smartbroker.broker.direct_reply import PREFIX, ReplyTo
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.errors import ChannelError
from smartbroker.protocol import codec


@pytest.fixture
def conn() -> FakeConnection:
    broker = new_broker()
    conn = FakeConnection(broker)
    conn.vhost.declare_queue("q")
    return conn


def refused(ch, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(ChannelError) as err:
        publish(ch, *args, **kwargs)
    return err.value.code, err.value.text


def test_a_routed_publish_reaches_the_queue_and_writes_nothing(conn: FakeConnection) -> None:
    ch = conn.open_channel()
    publish(ch, "", "q", b"hello")
    assert conn.vhost.queues["q"].message_count == 1
    assert conn.flush() == []
    assert conn.has_published


def test_unroutable_mandatory_is_returned_with_its_content(conn: FakeConnection) -> None:
    ch = conn.open_channel(3)
    props = commands.Basic.Properties(content_type="text/plain")
    publish(ch, "", "nowhere", b"lost", props, mandatory=True)
    header = codec.encode_header(4, props)
    assert conn.flush() == [
        codec.return_frame(3, 312, "NO_ROUTE", codec.shortstr("") + codec.shortstr("nowhere")),
        *codec.content_frames(3, header, b"lost", conn.frame_max)]


def test_unroutable_without_mandatory_is_dropped_silently(conn: FakeConnection) -> None:
    publish(conn.open_channel(), "", "nowhere")
    assert conn.flush() == []


def test_unknown_and_internal_exchanges_are_refused(conn: FakeConnection) -> None:
    ch = conn.open_channel()
    assert refused(ch, "nope", "k") == (404, "no exchange 'nope' in vhost '/'")
    conn.vhost.declare_exchange("inner", "direct", internal=True)
    assert refused(ch, "inner", "k") == (
        403, "cannot publish to internal exchange 'inner' in vhost '/'")


def test_write_permission_is_checked_and_its_cache_dropped_on_change(conn: FakeConnection) -> None:
    broker = conn.session.broker
    ch = conn.open_channel()
    publish(ch, "", "q")  # allowed, and remembered
    broker.permissions.set(Permission("guest", "/", write="^only-this$"))
    code, text = refused(ch, "", "q")
    assert (code, text) == (403, "access to exchange 'amq.default' in vhost '/' refused for "
                                 "user 'guest'")
    broker.permissions.set(Permission("guest", "/"))
    publish(ch, "", "q")
    assert conn.vhost.queues["q"].message_count == 2


def test_topic_permissions_apply_to_topic_exchanges(conn: FakeConnection) -> None:
    broker = conn.session.broker
    conn.vhost.declare_exchange("t", "topic")
    broker.permissions.set_topic(TopicPermission("guest", "/", "t", write="^allowed\\."))
    ch = conn.open_channel()
    publish(ch, "t", "allowed.key")
    assert refused(ch, "t", "other.key") == (
        403, "access to topic 'other.key' in exchange 't' in vhost '/' refused for user "
             "'guest'")


@pytest.mark.parametrize(("props", "reply"), [
    (commands.Basic.Properties(expiration="-1"), (406, "invalid expiration '-1': {value_negative,-1}")),
    (commands.Basic.Properties(headers={"CC": "single"}),
     (406, 'invalid message: {unacceptable_type_in_header,"CC",longstr}')),
    (commands.Basic.Properties(user_id="mallory"),
     (406, "user_id property set to 'mallory' but authenticated user was 'guest'")),
    (commands.Basic.Properties(reply_to="amq.rabbitmq.reply-to"),
     (406, "fast reply consumer does not exist")),
])
def test_properties_rabbitmq_refuses(conn: FakeConnection, props, reply) -> None:
    assert refused(conn.open_channel(), "", "q", b"x", props) == reply
    assert conn.vhost.queues["q"].message_count == 0


def test_matching_user_id_and_array_cc_are_accepted(conn: FakeConnection) -> None:
    conn.vhost.declare_queue("copy")
    publish(conn.open_channel(), "", "q", b"x",
            commands.Basic.Properties(user_id="guest", headers={"CC": ["copy"]}))
    assert conn.vhost.queues["q"].message_count == 1
    assert conn.vhost.queues["copy"].message_count == 1


def test_transaction_holds_publishes_until_commit(conn: FakeConnection) -> None:
    ch = conn.open_channel()
    ch.tx = []
    publish(ch, "", "q", b"a")
    publish(ch, "", "q", b"b")
    assert conn.vhost.queues["q"].message_count == 0
    assert ch.tx_commit() == set()  # nothing stored: nothing to fsync
    assert conn.vhost.queues["q"].message_count == 2
    publish(ch, "", "q", b"c")
    ch.tx_rollback()
    assert ch.tx_commit() == set()
    assert conn.vhost.queues["q"].message_count == 2


def test_a_refused_publish_in_a_transaction_is_refused_at_once(conn: FakeConnection) -> None:
    ch = conn.open_channel()
    ch.tx = []
    assert refused(ch, "nope", "k")[0] == 404
    assert ch.tx == []


def test_idempotent_producer_drops_a_retry_and_confirms_it(conn: FakeConnection) -> None:
    ch = conn.open_channel()
    ch.confirm = True
    props = commands.Basic.Properties(headers={"x-producer-id": "p1", "x-producer-seq": 1})
    publish(ch, "", "q", b"once", props)
    publish(ch, "", "q", b"once", props)  # the producer's retry
    assert conn.vhost.queues["q"].message_count == 1
    assert conn.flush() == [codec.ack_frame(1, 2, True)]


def test_first_publish_blocks_the_connection_during_an_alarm(conn: FakeConnection) -> None:
    conn.session.broker.alarms.update({"memory", "disk"})
    ch = conn.open_channel()
    publish(ch, "", "q")
    publish(ch, "", "q")
    assert conn.blocked_for == ["low on disk/memory"]  # once: then alarms.py decides
    assert conn.has_published


def test_no_alarm_no_block(conn: FakeConnection) -> None:
    publish(conn.open_channel(), "", "q")
    assert conn.blocked_for == []


def test_direct_reply_to_is_rewritten_to_the_channels_reply_consumer(conn) -> None:
    ch = conn.open_channel()
    ch.reply_to = ReplyTo(ch, conn.vhost.replies)
    publish(ch, "", "q", b"req", commands.Basic.Properties(reply_to="amq.rabbitmq.reply-to"))
    entry = conn.vhost.queues["q"].get()
    assert entry is not None
    assert entry.message.properties.reply_to == ch.reply_to.name
    assert ch.reply_to.name.startswith(PREFIX)
