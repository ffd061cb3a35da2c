"""Helpers shared by the VirtualHost unit tests (test_vhost_*.py): declare a queue,
route a message and return the queue names, and the AMQP code an operation fails with."""

from __future__ import annotations

import pytest

from smartbroker.broker.vhost import VirtualHost
from smartbroker.errors import AMQPError
from smartbroker.message import Message
from smartbroker.queues.classic import ClassicQueue


def queue(vh: VirtualHost, name: str, **kwargs) -> ClassicQueue:
    q, created = vh.declare_queue(name, **kwargs)
    assert created
    return q


def route(vh: VirtualHost, exchange: str, routing_key: str = "",
          headers: dict | None = None, cc: list[str] | None = None) -> set[str]:
    from pamqp import commands

    props = commands.Basic.Properties(headers=headers) if headers else None
    message = Message.build(exchange, routing_key, b"x", props)
    queues = vh.route(vh.exchange(exchange), message, [routing_key, *(cc or [])])
    return {q.name for q in queues}


def code_of(call, *args, **kwargs) -> int:
    with pytest.raises(AMQPError) as err:
        call(*args, **kwargs)
    return err.value.code
