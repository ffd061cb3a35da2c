"""AMQP class ``exchange``: declare, delete, and exchange-to-exchange bind/unbind."""

from __future__ import annotations

from pamqp import commands

from smartbroker.errors import access_refused


def declare(conn, ch, m: commands.Exchange.Declare) -> None:
    if not m.passive:
        conn.check("configure", "exchange", m.exchange)
        conn.access.check_declare("exchange", m.exchange, m.arguments,
                                  m.exchange in conn.vhost.exchanges)
    conn.vhost.declare_exchange(m.exchange, m.exchange_type, passive=m.passive, durable=m.durable,
                                auto_delete=m.auto_delete, internal=m.internal,
                                arguments=m.arguments or {})
    if not m.nowait:
        conn.send_method(ch.number, commands.Exchange.DeclareOk())


def delete(conn, ch, m: commands.Exchange.Delete) -> None:
    conn.check("configure", "exchange", m.exchange)
    conn.vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
    if not m.nowait:
        conn.send_method(ch.number, commands.Exchange.DeleteOk())


def _destination(conn, name: str):
    if name == "":
        raise access_refused("operation not permitted on the default exchange")
    return conn.vhost.exchange(name)


def bind(conn, ch, m: commands.Exchange.Bind) -> None:
    conn.check("write", "exchange", m.destination)
    conn.check("read", "exchange", m.source)
    conn.access.check_topic_named("read", m.source, m.routing_key)
    conn.vhost.bind(m.source, _destination(conn, m.destination), m.routing_key, m.arguments or {})
    if not m.nowait:
        conn.send_method(ch.number, commands.Exchange.BindOk())


def unbind(conn, ch, m: commands.Exchange.Unbind) -> None:
    if m.destination == "" or m.source == "":
        raise access_refused("operation not permitted on the default exchange")
    conn.check("write", "exchange", m.destination)
    conn.check("read", "exchange", m.source)
    conn.access.check_topic_named("read", m.source, m.routing_key)
    destination = conn.vhost.exchanges.get(m.destination)
    conn.vhost.unbind(m.source, destination, m.routing_key, m.arguments or {})
    if not m.nowait:
        conn.send_method(ch.number, commands.Exchange.UnbindOk())


HANDLERS = {
    commands.Exchange.Declare: declare,
    commands.Exchange.Delete: delete,
    commands.Exchange.Bind: bind,
    commands.Exchange.Unbind: unbind,
}
