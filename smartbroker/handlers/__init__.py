"""One module per AMQP class; each maps pamqp method classes to handler functions.

A handler is ``handler(conn, channel, method) -> None``: it replies through ``conn`` and
raises ``ChannelError``/``ConnectionError`` for RabbitMQ's error replies.
"""

from collections.abc import Callable
from typing import Any

from smartbroker.handlers import basic, channel, confirm, exchange, queue, tx

Handler = Callable[[Any, Any, Any], None]

CHANNEL_HANDLERS: dict[type, Handler] = {
    **channel.HANDLERS, **exchange.HANDLERS, **queue.HANDLERS, **basic.HANDLERS,
    **confirm.HANDLERS, **tx.HANDLERS,
}

__all__ = ["CHANNEL_HANDLERS", "Handler"]
