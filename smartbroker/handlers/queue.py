"""AMQP class ``queue``: declare, bind, unbind, purge, delete."""

from __future__ import annotations

from pamqp import commands

from smartbroker.broker.direct_reply import PSEUDO_QUEUE
from smartbroker.broker.vhost import generated_name
from smartbroker.errors import ChannelError, not_found
from smartbroker.protocol import codec
from smartbroker.queues.types import check_server_named
from smartbroker.server.held import answer_when_done


def queue_name(ch, name: str) -> str:
    """An empty queue name means the channel's last declared queue (AMQP 0-9-1)."""
    if name:
        return name
    if ch.last_queue is None:
        raise not_found("no previously declared queue")
    return ch.last_queue


def declare(conn, ch, m: commands.Queue.Declare) -> None:
    if m.passive and m.queue == PSEUDO_QUEUE:  # direct reply-to exists for every channel
        conn.send_method(ch.number, codec.build(commands.Queue.DeclareOk, queue=PSEUDO_QUEUE,
                                                message_count=0, consumer_count=1))
        return
    if m.passive:
        name = m.queue  # RabbitMQ: no "last declared queue" shortcut here ('' is not found)
    else:
        if not m.queue:
            check_server_named(m.arguments or {})
        name = m.queue or generated_name("amq.gen-")
        conn.check("configure", "queue", name)
        conn.access.check_declare("queue", name, m.arguments, name in conn.vhost.queues)
    q, created = conn.vhost.declare_queue(
        name, server_named=not m.queue, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
        auto_delete=m.auto_delete, arguments=m.arguments or {}, owner=conn)
    if created and q.exclusive_owner is conn:
        conn.exclusive_queues.add(q)
    q.touch()
    ch.last_queue = q.name
    if m.nowait:
        return
    later = getattr(q, "declare_ok_later", None) if not created else None
    if later is not None:  # led by another node: its counts, or 404 if its node is down
        later(conn, ch)
        return
    ok = codec.build(commands.Queue.DeclareOk, queue=q.name, message_count=q.message_count,
                     consumer_count=q.consumer_count)
    durable = getattr(q, "created", None) if created else None  # a new stream's fsync
    if durable is None or durable.done():
        conn.send_method(ch.number, ok)
        return
    answer_when_done(conn, durable, lambda: conn.send_method(ch.number, ok),
                     lambda exc: conn.channel_failed(ch, ChannelError(
                         506, f"RESOURCE_ERROR - the new stream's files were not made "
                              f"durable: {exc}", 50, 10)))


def bind(conn, ch, m: commands.Queue.Bind) -> None:
    name = queue_name(ch, m.queue)
    conn.check("write", "queue", name)
    conn.check("read", "exchange", m.exchange)
    conn.access.check_topic_named("read", m.exchange, m.routing_key)
    q = conn.vhost.queue(name, conn)
    conn.vhost.bind(m.exchange, q, m.routing_key, m.arguments or {})
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.BindOk())


def unbind(conn, ch, m: commands.Queue.Unbind) -> None:
    name = queue_name(ch, m.queue)
    conn.check("write", "queue", name)
    conn.check("read", "exchange", m.exchange)
    conn.access.check_topic_named("read", m.exchange, m.routing_key)
    q = conn.vhost.queues.get(name)
    if q is not None:
        conn.vhost.check_exclusive(q, conn)
    conn.vhost.unbind(m.exchange, q, m.routing_key, m.arguments or {})
    conn.send_method(ch.number, commands.Queue.UnbindOk())


def purge(conn, ch, m: commands.Queue.Purge) -> None:
    name = queue_name(ch, m.queue)
    conn.check("read", "queue", name)
    later = getattr(conn.vhost.queue(name, conn), "purge_later", None)
    if later is not None:  # led by another node (cluster/remote_queue.py): answers later
        later(conn, ch, m.nowait)
        return
    count = conn.vhost.purge_queue(name, conn)
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.PurgeOk(message_count=count))


def delete(conn, ch, m: commands.Queue.Delete) -> None:
    name = queue_name(ch, m.queue)
    conn.check("configure", "queue", name)
    later = getattr(conn.vhost.queues.get(name), "delete_later", None)
    if later is not None:  # led by another node (cluster/remote_queue.py): deleted there
        later(conn, ch, m.if_unused, m.if_empty, m.nowait)
        return
    with ch.cancels_after_reply() as cancels:
        count = conn.vhost.delete_queue(name, if_unused=m.if_unused, if_empty=m.if_empty,
                                        owner=conn)
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.DeleteOk(message_count=count))
    for cancel in cancels:  # this channel's consumers of the queue: after delete-ok, as RabbitMQ
        conn.send_method(ch.number, cancel)


HANDLERS = {
    commands.Queue.Declare: declare,
    commands.Queue.Bind: bind,
    commands.Queue.Unbind: unbind,
    commands.Queue.Purge: purge,
    commands.Queue.Delete: delete,
}
