"""AMQP class ``queue``: declare, bind, unbind, purge, delete."""

from __future__ import annotations

from pamqp import commands


def declare(conn, ch, m: commands.Queue.Declare) -> None:
    q, created = conn.vhost.declare_queue(
        m.queue, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
        auto_delete=m.auto_delete, arguments=m.arguments or {}, owner=conn)
    if created and q.exclusive_owner is conn:
        conn.exclusive_queues.add(q)
    q.touch()
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.DeclareOk(
            queue=q.name, message_count=q.message_count, consumer_count=q.consumer_count))


def bind(conn, ch, m: commands.Queue.Bind) -> None:
    q = conn.vhost.queue(m.queue, conn)
    conn.vhost.bind(m.exchange, q, m.routing_key, m.arguments or {})
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.BindOk())


def unbind(conn, ch, m: commands.Queue.Unbind) -> None:
    q = conn.vhost.queue(m.queue, conn)
    conn.vhost.unbind(m.exchange, q, m.routing_key, m.arguments or {})
    conn.send_method(ch.number, commands.Queue.UnbindOk())


def purge(conn, ch, m: commands.Queue.Purge) -> None:
    count = conn.vhost.purge_queue(m.queue, conn)
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.PurgeOk(message_count=count))


def delete(conn, ch, m: commands.Queue.Delete) -> None:
    count = conn.vhost.delete_queue(m.queue, if_unused=m.if_unused, if_empty=m.if_empty, owner=conn)
    if not m.nowait:
        conn.send_method(ch.number, commands.Queue.DeleteOk(message_count=count))


HANDLERS = {
    commands.Queue.Declare: declare,
    commands.Queue.Bind: bind,
    commands.Queue.Unbind: unbind,
    commands.Queue.Purge: purge,
    commands.Queue.Delete: delete,
}
