"""AMQP class ``confirm`` (RabbitMQ extension): publisher confirms."""

from __future__ import annotations

from pamqp import commands

from smartbroker.errors import precondition_failed


def select(conn, ch, m: commands.Confirm.Select) -> None:
    if ch.tx is not None:
        raise precondition_failed("cannot switch from tx to confirm mode")
    ch.confirm = True
    if not m.nowait:
        conn.send_method(ch.number, commands.Confirm.SelectOk())


HANDLERS = {commands.Confirm.Select: select}
