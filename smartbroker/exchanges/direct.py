"""Direct exchange: exact routing-key match through a dict; O(1) per publish."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import ClassVar

from smartbroker.exchanges.base import RefCounted, Table

_EMPTY: dict[Hashable, int] = {}


class DirectExchange:
    type_name: ClassVar[str] = "direct"
    uses_headers: ClassVar[bool] = False

    def __init__(self) -> None:
        self._by_key: dict[str, RefCounted] = {}

    def validate_binding(self, routing_key: str, arguments: Table) -> None:
        return None

    def bind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        self._by_key.setdefault(routing_key, RefCounted()).add(destination)

    def unbind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        dests = self._by_key.get(routing_key)
        if dests is not None:
            dests.remove(destination)
            if not dests:
                del self._by_key[routing_key]

    def route(self, routing_key: str, headers: Table | None) -> Iterable[Hashable]:
        dests = self._by_key.get(routing_key)
        return dests.counts if dests is not None else _EMPTY
