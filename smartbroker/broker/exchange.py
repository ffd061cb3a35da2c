"""An exchange: its declared attributes, its bindings, and the type that routes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.exchanges import EXCHANGE_TYPES, ExchangeType
from smartbroker.exchanges.base import freeze
from smartbroker.protocol.field_types import amqp_type


@dataclass(frozen=True, eq=False)
class Binding:
    source: Exchange
    destination: Any  # a queue or an Exchange
    routing_key: str
    arguments: Mapping[str, Any]

    @property
    def key(self) -> tuple[Any, str, Any]:
        return (self.destination, self.routing_key, freeze(self.arguments))


class Exchange:
    __slots__ = ("name", "type_name", "durable", "auto_delete", "internal", "arguments",
                 "router", "bindings", "inbound", "__weakref__")

    def __init__(self, name: str, type_name: str, *, durable: bool = False,
                 auto_delete: bool = False, internal: bool = False,
                 arguments: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.type_name = type_name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.router: ExchangeType = EXCHANGE_TYPES[type_name]()
        self.bindings: dict[tuple[Any, str, Any], Binding] = {}  # outgoing, by identity
        self.inbound: set[Binding] = set()  # bindings where this exchange is the destination

    @property
    def alternate_exchange(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        if isinstance(value, bytes):  # not UTF-8: no exchange can have that name
            value = value.decode("utf-8", "surrogateescape")
        return value if isinstance(value, str) and value else None

    def add_binding(self, binding: Binding) -> bool:
        if binding.key in self.bindings:
            return False
        self.bindings[binding.key] = binding
        self.router.bind(binding.destination, binding.routing_key, binding.arguments)
        return True

    def remove_binding(self, binding: Binding) -> Binding | None:
        existing = self.bindings.pop(binding.key, None)
        if existing is not None:
            self.router.unbind(existing.destination, existing.routing_key, existing.arguments)
        return existing

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, {self.type_name!r})"


def validate_exchange_arguments(exchange: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    """RabbitMQ's 406 for an ``alternate-exchange`` that is not a string."""
    if "alternate-exchange" in arguments and not isinstance(arguments["alternate-exchange"], str | bytes):
        kind = amqp_type(arguments["alternate-exchange"])
        raise precondition_failed(f"invalid type '{kind}' for arg 'alternate-exchange' in exchange "
                                  f"'{exchange}' in vhost '{vhost}'")
