"""The interface every exchange type implements.

An exchange type owns its binding index (a dict for direct, a trie for topic, a set for
fanout) and never scans all bindings to route, except headers, whose matching is per binding
by nature (as in RabbitMQ). Destinations are opaque hashables: the broker passes queue and
exchange objects, unit tests pass strings. Adding an exchange type is adding a module and
one line in ``smartbroker/exchanges/__init__.py``.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from smartbroker.protocol.fields import Timestamp

Table = Mapping[str, Any]


class ExchangeType(Protocol):
    type_name: ClassVar[str]
    uses_headers: ClassVar[bool]  # True: route() needs the message headers decoded

    def validate_binding(self, routing_key: str, arguments: Table) -> None:
        """Raise ``ChannelError`` for a binding this type refuses."""

    def bind(self, destination: Hashable, routing_key: str, arguments: Table) -> None: ...

    def unbind(self, destination: Hashable, routing_key: str, arguments: Table) -> None: ...

    def route(self, routing_key: str, headers: Table | None) -> Iterable[Hashable]: ...


class RefCounted:
    """A destination set where the same destination may be bound several times."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}

    def add(self, destination: Hashable) -> None:
        self.counts[destination] = self.counts.get(destination, 0) + 1

    def remove(self, destination: Hashable) -> None:
        left = self.counts.get(destination, 0) - 1
        if left > 0:
            self.counts[destination] = left
        else:
            self.counts.pop(destination, None)

    def __bool__(self) -> bool:
        return bool(self.counts)


def freeze(value: Any) -> tuple[Any, ...]:
    """A hashable, order-independent form of an AMQP table value (binding identity).

    A flat tuple of tokens (a type name before every scalar, brackets around containers,
    keys sorted), built without recursion: binding arguments may be nested as deep as a
    frame allows, and nested tuples would be hashed and compared recursively."""
    out: list[Any] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Close):
            out.append(item.token)
        elif isinstance(item, Mapping):
            out.append("{")
            stack.append(_CLOSE_MAP)
            for key, child in sorted(item.items(), key=lambda kv: str(kv[0]), reverse=True):
                stack.append(child)
                stack.append(_Key(str(key)))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_CLOSE_LIST)
            stack.extend(reversed(item))
        elif isinstance(item, _Key):
            out += ("key", item.name)
        else:
            out += _scalar_tokens(item)
    return tuple(out)


def _scalar_tokens(item: Any) -> tuple[str, Any]:
    """(type name, value); a timestamp is the same whether it came from a method frame
    (pamqp: ``datetime``) or from message headers (``fields.Timestamp``)."""
    if isinstance(item, datetime.datetime):
        stamp = item if item.tzinfo else item.replace(tzinfo=datetime.UTC)
        return ("timestamp", int(stamp.timestamp()))
    if isinstance(item, Timestamp):
        return ("timestamp", int(item))
    if isinstance(item, bytearray):
        return ("bytes", bytes(item))
    return (type(item).__name__, item)


class _Key:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Close:
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


_CLOSE_MAP, _CLOSE_LIST = _Close("}"), _Close("]")
