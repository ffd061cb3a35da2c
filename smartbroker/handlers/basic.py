"""AMQP class ``basic``: qos, consume, cancel, get, settlement, recover.

``basic.publish`` and the content frames take the connection's fast path; the ack family
has a fast path there too and lands in ``Channel.ack``/``nack`` either way.
"""

from __future__ import annotations

from pamqp import commands

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.broker.direct_reply import PSEUDO_QUEUE, ReplyTo
from smartbroker.broker.vhost import generated_name
from smartbroker.errors import access_refused, not_allowed, not_implemented, precondition_failed
from smartbroker.handlers.queue import queue_name
from smartbroker.protocol import codec
from smartbroker.queues.arguments import validate_consumer_arguments


def qos(conn, ch, m: commands.Basic.Qos) -> None:
    if m.prefetch_size:
        raise not_implemented(f"prefetch_size!=0 ({m.prefetch_size})")
    if m.global_:
        ch.global_prefetch = m.prefetch_count
    else:
        ch.consumer_prefetch = m.prefetch_count
    conn.send_method(ch.number, commands.Basic.QosOk())
    ch.redispatch_all()


def consume_replies(conn, ch, m: commands.Basic.Consume) -> None:
    """Direct reply-to: the pseudo-queue ``amq.rabbitmq.reply-to`` (no_ack only)."""
    if not m.no_ack:
        raise precondition_failed("reply consumer cannot acknowledge")
    if ch.reply_to is not None:
        raise precondition_failed("reply consumer already set")
    tag = m.consumer_tag or generated_name("amq.ctag-")
    if tag in ch.consumers:
        raise not_allowed(f"attempt to reuse consumer tag '{tag}'")
    reply = ch.reply_to = ReplyTo(ch, conn.vhost.replies)
    consumer = ChannelConsumer(ch, reply, tag, no_ack=True, exclusive=True, prefetch=0)
    if not m.nowait:
        conn.send_method(ch.number, codec.build(commands.Basic.ConsumeOk, consumer_tag=tag))
    ch.add_consumer(consumer)


def consume(conn, ch, m: commands.Basic.Consume) -> None:
    if m.queue == PSEUDO_QUEUE:
        consume_replies(conn, ch, m)
        return
    name = queue_name(ch, m.queue)
    conn.check("read", "queue", name)
    q = conn.vhost.queue(name, conn)
    tag = m.consumer_tag or generated_name("amq.ctag-")
    if tag in ch.consumers:
        raise not_allowed(f"attempt to reuse consumer tag '{tag}'")
    args = m.arguments or {}
    validate_consumer_arguments(q.name, conn.vhost.name, args)
    if q.consumers and (m.exclusive or q.exclusive_consumer):
        raise access_refused(f"queue '{q.name}' in vhost '{conn.vhost.name}' in exclusive use")
    q.validate_consumer(args, m.no_ack, ch.consumer_prefetch)
    if ch.global_prefetch and not q.capabilities.supports_global_qos:  # RabbitMQ 3.10's 540
        raise not_implemented(f"queue '{q.name}' in vhost '{conn.vhost.name}' does not support global qos")
    priority = args.get("x-priority", 0)
    consumer = ChannelConsumer(ch, q, tag, no_ack=m.no_ack, exclusive=m.exclusive,
                               prefetch=ch.consumer_prefetch,
                               priority=priority,
                               arguments=dict(args))
    later = getattr(q, "consume_later", None)
    if later is not None:  # led by another node: consume-ok once its leader accepted
        later(conn, ch, consumer, m.nowait)
        return
    if not m.nowait:
        conn.send_method(ch.number, codec.build(commands.Basic.ConsumeOk, consumer_tag=tag))
    ch.add_consumer(consumer)


def cancel(conn, ch, m: commands.Basic.Cancel) -> None:
    ch.cancel_consumer(m.consumer_tag)
    if not m.nowait:
        conn.send_method(ch.number, codec.build(commands.Basic.CancelOk, consumer_tag=m.consumer_tag))


def get(conn, ch, m: commands.Basic.Get) -> None:
    name = queue_name(ch, m.queue)
    conn.check("read", "queue", name)
    q = conn.vhost.queue(name, conn)
    later = getattr(q, "get_later", None)
    if later is not None:  # led by another node (cluster/remote_queue.py): answers later
        later(conn, ch, m.no_ack)
        return
    entry = q.get(m.no_ack)
    if entry is None:
        conn.send_method(ch.number, commands.Basic.GetEmpty())
        return
    ch.send_get_ok(q, entry, m.no_ack)


def ack(conn, ch, m: commands.Basic.Ack) -> None:
    ch.ack(m.delivery_tag, m.multiple)


def nack(conn, ch, m: commands.Basic.Nack) -> None:
    ch.nack(m.delivery_tag, m.multiple, m.requeue)


def reject(conn, ch, m: commands.Basic.Reject) -> None:
    ch.nack(m.delivery_tag, False, m.requeue)


def recover(conn, ch, m: commands.Basic.Recover) -> None:
    if not m.requeue:
        raise not_implemented("requeue=false")
    ch.recover()
    conn.send_method(ch.number, commands.Basic.RecoverOk())


def recover_async(conn, ch, m: commands.Basic.RecoverAsync) -> None:
    if not m.requeue:
        raise not_implemented("requeue=false")
    ch.recover()


HANDLERS = {
    commands.Basic.Qos: qos,
    commands.Basic.Consume: consume,
    commands.Basic.Cancel: cancel,
    commands.Basic.Get: get,
    commands.Basic.Ack: ack,
    commands.Basic.Nack: nack,
    commands.Basic.Reject: reject,
    commands.Basic.Recover: recover,
    commands.Basic.RecoverAsync: recover_async,
}
