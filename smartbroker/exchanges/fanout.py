"""Fanout exchange: every bound destination, whatever the routing key."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import ClassVar

from smartbroker.exchanges.base import RefCounted, Table


class FanoutExchange:
    type_name: ClassVar[str] = "fanout"
    uses_headers: ClassVar[bool] = False

    def __init__(self) -> None:
        self._dests = RefCounted()

    def validate_binding(self, routing_key: str, arguments: Table) -> None:
        return None

    def bind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        self._dests.add(destination)

    def unbind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        self._dests.remove(destination)

    def route(self, routing_key: str, headers: Table | None) -> Iterable[Hashable]:
        return self._dests.counts
