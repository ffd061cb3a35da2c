"""AMQP class ``channel``: close (both ways) and flow. ``channel.open`` is the connection's."""

from __future__ import annotations

from pamqp import commands

from smartbroker.errors import not_implemented


def close(conn, ch, method: commands.Channel.Close) -> None:
    conn.close_channel(ch, reply=True)


def close_ok(conn, ch, method: commands.Channel.CloseOk) -> None:
    conn.forget_channel(ch)


def flow(conn, ch, method: commands.Channel.Flow) -> None:
    if not method.active:
        # RabbitMQ refuses client-initiated flow control that stops deliveries
        raise not_implemented("active=false")
    ch.flow_active = True
    conn.send_method(ch.number, commands.Channel.FlowOk(active=True))
    ch.redispatch_all()


def flow_ok(conn, ch, method: commands.Channel.FlowOk) -> None:
    return None


HANDLERS = {
    commands.Channel.Close: close,
    commands.Channel.CloseOk: close_ok,
    commands.Channel.Flow: flow,
    commands.Channel.FlowOk: flow_ok,
}
