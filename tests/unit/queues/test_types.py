"""Queue types behind one interface: what a publish result tells the vhost (which logs a
confirm waits for), the per-vhost dead-letter trampoline, per-queue positions, and the
storage a vhost is built with. No broker process, no socket."""

from __future__ import annotations

import pytest
from pamqp import commands

from smartbroker.broker.durable import MessageStore
from smartbroker.broker.vhost import VirtualHost
from smartbroker.errors import ChannelError
from smartbroker.message import Message
from smartbroker.queues.base import Settle, Storage
from smartbroker.queues.classic import ClassicQueue
from smartbroker.queues.stream import StreamQueue


def persistent(key: str, body: bytes = b"x") -> Message:
    return Message.build("", key, body, commands.Basic.Properties(delivery_mode=2))


@pytest.fixture
def stored_vhost(tmp_path):
    store = MessageStore(tmp_path / "messages")
    vh = VirtualHost("/", Storage(store, tmp_path))
    yield vh
    for q in vh.queues.values():
        q.close()
    store.close()


def test_a_durable_classic_queue_waits_for_the_message_store(stored_vhost):
    vh = stored_vhost
    vh.declare_queue("c", durable=True)
    result = vh.publish(persistent("c"))
    assert result.routed and result.accepted and result.logs == (vh.store.log,)


def test_a_stream_waits_for_its_own_partition_log(stored_vhost):
    vh = stored_vhost
    q, _ = vh.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    assert isinstance(q, StreamQueue) and q.storage is vh.storage
    result = vh.publish(persistent("s"))
    assert result.logs == (q.logs[0],)


def test_fan_out_to_both_waits_for_both_logs(stored_vhost):
    vh = stored_vhost
    vh.declare_queue("c", durable=True)
    s, _ = vh.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    vh.declare_exchange("fan", "fanout")
    vh.bind("fan", vh.queues["c"], "", {})
    vh.bind("fan", s, "", {})
    result = vh.publish(Message.build("fan", "", b"x", commands.Basic.Properties(delivery_mode=2)))
    assert set(result.logs) == {vh.store.log, s.logs[0]}


def test_transient_publishes_wait_for_nothing():
    vh = VirtualHost("/")
    vh.declare_queue("c")
    vh.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    assert vh.publish(persistent("c")).logs == ()
    assert vh.publish(persistent("s")).logs == ()  # no storage: the stream is in memory


def test_a_refused_publish_is_not_accepted():
    vh = VirtualHost("/")
    vh.declare_queue("c", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert vh.publish(persistent("c")).accepted
    refused = vh.publish(persistent("c"))
    assert refused.routed and not refused.accepted


def test_each_vhost_runs_its_own_dead_letter_chain():
    """A TTL-0 chain a -> b -> c in one vhost; another vhost is not involved."""
    one, other = VirtualHost("/"), VirtualHost("other")
    assert one.dead_letters is not other.dead_letters
    one.declare_queue("c")
    one.declare_queue("b", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": "c"})
    one.declare_queue("a", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": "b"})
    one.publish(Message.build("", "a", b"x"))
    entry = one.queues["c"].get(no_ack=True)
    assert entry is not None
    deaths = entry.message.headers["x-death"]
    assert [d["queue"] for d in deaths] == ["b", "a"]


def test_positions_are_per_queue_only_the_order_matters():
    a, b = ClassicQueue("a", "/"), ClassicQueue("b", "/")
    for q in (a, b):
        for i in range(3):
            q.publish(Message.build("", q.name, b"%d" % i))
    taken = [a.get(), b.get(), a.get()]
    assert [e.seq for e in taken] == [1, 1, 2]
    assert a.settle(Settle.REQUEUE, [taken[2], taken[0]]) == []
    assert [a.get().message.body for _ in range(3)] == [b"0", b"1", b"2"]


def test_a_type_refuses_the_x_arguments_its_capabilities_do_not_accept():
    """Streams declare their arguments; the refusal comes before any property check
    (RabbitMQ 3.10.8's order and text). Classic queues keep unknown arguments."""
    vh = VirtualHost("/")
    with pytest.raises(ChannelError) as err:
        vh.declare_queue("s", durable=False, arguments={"x-queue-type": "stream", "x-foo": 1})
    assert (err.value.code, err.value.text) == (
        406, "invalid arg 'x-foo' for queue 's' in vhost '/' of queue type rabbit_stream_queue")
    q, _ = vh.declare_queue("c", arguments={"x-foo": 1, "other": 2})
    assert q.capabilities.arguments is None and q.arguments["x-foo"] == 1
    assert "x-foo" not in StreamQueue.capabilities.arguments
    assert "x-max-age" in StreamQueue.capabilities.arguments
