"""Redeclare equivalence: RabbitMQ's 406/405 replies when a declare differs from what exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.broker.exchange import Exchange
from smartbroker.errors import precondition_failed, resource_locked
from smartbroker.exchanges.headers import same_value
from smartbroker.protocol.field_types import amqp_type


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def check_exchange_equivalent(ex: Exchange, where: str, type_name: str, durable: bool,
                               auto_delete: bool, internal: bool,
                               arguments: Mapping[str, Any]) -> None:
    for field, have, want in (("type", ex.type_name, type_name), ("durable", ex.durable, durable),
                              ("auto_delete", ex.auto_delete, auto_delete),
                              ("internal", ex.internal, internal)):
        if have != want:
            raise precondition_failed(
                f"inequivalent arg '{field}' for exchange '{ex.name}' {where}: "
                f"received '{_fmt(want)}' but current is '{_fmt(have)}'")
    have_ae, want_ae = ex.arguments.get("alternate-exchange"), arguments.get("alternate-exchange")
    if _fmt(have_ae) != _fmt(want_ae):
        raise precondition_failed(
            f"inequivalent arg 'alternate-exchange' for exchange '{ex.name}' {where}: "
            f"received {_fmt(want_ae)!r} but current is {_fmt(have_ae)!r}")


def check_queue_equivalent(q: Any, where: str, durable: bool, exclusive: bool,
                            auto_delete: bool, arguments: Mapping[str, Any]) -> None:
    if q.durable != durable:
        raise precondition_failed(
            f"inequivalent arg 'durable' for queue '{q.name}' {where}: "
            f"received '{_fmt(durable)}' but current is '{_fmt(q.durable)}'")
    if q.auto_delete != auto_delete:
        raise precondition_failed(
            f"inequivalent arg 'auto_delete' for queue '{q.name}' {where}: "
            f"received '{_fmt(auto_delete)}' but current is '{_fmt(q.auto_delete)}'")
    if (q.exclusive_owner is not None) != exclusive:
        raise resource_locked(
            f"cannot obtain exclusive access to locked queue '{q.name}' {where}. "
            "It could be originally declared on another connection or the exclusive "
            "property value does not match that of the original declaration.")
    for arg in sorted(q.capabilities.equivalence_arguments):
        have, want = q.arguments.get(arg), arguments.get(arg)
        if arg == "x-queue-type" and _fmt(want or "classic") == _fmt(have or "classic"):
            continue
        if not (have is None and want is None) and not same_value(have, want):
            both = have is not None and want is not None  # RabbitMQ: plain values then
            received, current = (f"'{_fmt(want)}'", f"'{_fmt(have)}'") if both else (
                _describe(want), _describe(have))
            raise precondition_failed(
                f"inequivalent arg '{arg}' for queue '{q.name}' {where}: "
                f"received {received} but current is {current}")


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value '{_fmt(value)}' of type '{amqp_type(value)}'"
