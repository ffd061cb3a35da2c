"""The interface every exchange type implements.

An exchange type owns its binding index (a dict for direct, a trie for topic, a set for
fanout) and never scans all bindings to route, except headers, whose matching is per binding
by nature (as in RabbitMQ). Destinations are opaque hashables: the broker passes queue and
exchange objects, unit tests pass strings. Adding an exchange type is adding a module and
one line in ``smartbroker/exchanges/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

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


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of an AMQP table value (binding identity)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value
