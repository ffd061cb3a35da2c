"""Headers exchange: match message headers against binding arguments (``x-match``).

As RabbitMQ: ``all`` (default) / ``any`` ignore binding keys starting with ``x-``;
``all-with-x`` / ``any-with-x`` include them. A binding value of void (None) matches on the
header's presence. Values match only when equal and of the same type class (an int never
equals a float or a bool). An ``all`` binding with no keys matches every message; ``any``
with no keys matches none.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterable
from typing import Any, ClassVar

from smartbroker.errors import precondition_failed
from smartbroker.exchanges.base import Table, freeze
from smartbroker.protocol.field_types import amqp_type
from smartbroker.protocol.fields import Timestamp

MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def _type_class(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str | bytes | bytearray):
        return str
    return type(value)


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same AMQP type class (RabbitMQ never equates 1, 1.0 and true).
    Tables, arrays and timestamps compare by ``freeze``: flat, so a header nested as deep
    as a frame allows never recurses."""
    if isinstance(a, dict | list | datetime.datetime | Timestamp) or isinstance(
            b, dict | list | datetime.datetime | Timestamp):
        return freeze(a) == freeze(b)
    if isinstance(a, bytes | bytearray):
        a = bytes(a).decode(errors="replace")
    if isinstance(b, bytes | bytearray):
        b = bytes(b).decode(errors="replace")
    return _type_class(a) is _type_class(b) and a == b


class _Pattern:
    __slots__ = ("match_all", "pairs")

    def __init__(self, arguments: Table) -> None:
        mode = arguments.get("x-match", "all")
        if isinstance(mode, bytes):
            mode = mode.decode()
        with_x = mode.endswith("-with-x")
        self.match_all = mode.startswith("all")
        self.pairs = [(k, v) for k, v in arguments.items()
                      if k != "x-match" and (with_x or not k.startswith("x-"))]

    def matches(self, headers: Table) -> bool:
        if self.match_all:
            for key, want in self.pairs:
                if key not in headers or (want is not None and not same_value(want, headers[key])):
                    return False
            return True
        for key, want in self.pairs:
            if key in headers and (want is None or same_value(want, headers[key])):
                return True
        return False




class HeadersExchange:
    type_name: ClassVar[str] = "headers"
    uses_headers: ClassVar[bool] = True

    def __init__(self) -> None:
        self._bindings: dict[tuple[Hashable, Any], tuple[_Pattern, int]] = {}

    def validate_binding(self, routing_key: str, arguments: Table) -> None:
        mode = arguments.get("x-match", "all")
        if isinstance(mode, bytes):
            mode = mode.decode(errors="replace")
        if not isinstance(mode, str):
            raise precondition_failed(f"Invalid x-match field type {amqp_type(mode)} "
                                      f"(value {_erlang_term(mode)}); expected longstr")
        if mode not in MATCH_MODES:
            raise precondition_failed(f"Invalid x-match field value <<\"{mode}\">>; expected "
                                      "all, any, all-with-x, or any-with-x")

    def bind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        key = (destination, freeze(arguments))
        pattern, count = self._bindings.get(key, (None, 0))
        self._bindings[key] = (pattern or _Pattern(arguments), count + 1)

    def unbind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        key = (destination, freeze(arguments))
        entry = self._bindings.get(key)
        if entry is None:
            return
        if entry[1] > 1:
            self._bindings[key] = (entry[0], entry[1] - 1)
        else:
            del self._bindings[key]

    def route(self, routing_key: str, headers: Table | None) -> Iterable[Hashable]:
        headers = headers or {}
        return {dest for (dest, _), (pattern, _) in self._bindings.items() if pattern.matches(headers)}


def _erlang_term(value: Any) -> str:
    """How RabbitMQ prints a scalar field value in its error texts (others elided)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "undefined"
    if isinstance(value, int | float):
        return str(value)
    return "<<...>>"
