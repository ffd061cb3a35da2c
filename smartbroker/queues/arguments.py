"""Validation of queue ``x-`` arguments, with RabbitMQ's 406 messages (texts taken from
RabbitMQ 3.10: type errors name the AMQP field type, as the client sent it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.protocol.field_types import amqp_type

_NON_NEGATIVE_INTS = ("x-message-ttl", "x-max-length", "x-max-length-bytes", "x-delivery-limit")
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")
QUEUE_MODES = ("default", "lazy")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def check_replicated_properties(queue: str, vhost: str, durable: bool, exclusive: bool,
                                auto_delete: bool) -> None:
    """Quorum and stream queues are durable, shared and kept: RabbitMQ's checks, in its order."""
    where = f"for queue '{queue}' in vhost '{vhost}'"
    if auto_delete:
        raise precondition_failed(f"invalid property 'auto-delete' {where}")
    if exclusive:
        raise precondition_failed(f"invalid property 'exclusive-owner' {where}")
    if not durable:
        raise precondition_failed(f"invalid property 'non-durable' {where}")


def validate_queue_arguments(queue: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    def bad(arg: str, why: str) -> Exception:
        return precondition_failed(f"invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}")

    def integer(arg: str) -> int | None:
        if arg not in arguments:
            return None
        value = arguments[arg]
        if not _is_int(value):
            raise bad(arg, f'"expected integer, got {amqp_type(value)}"')
        return value

    def string(arg: str) -> str | None:
        if arg not in arguments:
            return None
        value = arguments[arg]
        if not isinstance(value, str | bytes):
            raise bad(arg, f"{{unacceptable_type,{amqp_type(value)}}}")
        return _text(value)

    for arg in _NON_NEGATIVE_INTS:
        value = integer(arg)
        if value is not None and value < 0:
            raise bad(arg, f"{{value_negative,{value}}}")
    expires = integer("x-expires")
    if expires is not None and expires <= 0:
        raise bad("x-expires", "{value_zero,0}" if expires == 0 else f"{{value_negative,{expires}}}")
    priority = integer("x-max-priority")
    if priority is not None and priority < 0:
        raise bad("x-max-priority", f"{{value_negative,{priority}}}")
    if priority is not None and priority > 255:
        raise bad("x-max-priority", f"{{max_value_exceeded,{priority}}}")
    if (overflow := string("x-overflow")) is not None and overflow not in OVERFLOW_MODES:
        raise bad("x-overflow", "invalid_overflow")
    if (mode := string("x-queue-mode")) is not None and mode not in QUEUE_MODES:
        raise bad("x-queue-mode", f"\"unsupported queue mode '{mode}'\"")
    if (kind := string("x-queue-type")) is not None and kind not in QUEUE_TYPES:
        raise bad("x-queue-type", f"\"unsupported queue type '{kind}'\"")
    if "x-single-active-consumer" in arguments and not isinstance(arguments["x-single-active-consumer"], bool):
        raise bad("x-single-active-consumer",
                  f"{{unacceptable_type,{amqp_type(arguments['x-single-active-consumer'])}}}")
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str | bytes):
        raise precondition_failed(f"invalid type '{amqp_type(dlx)}' for arg 'x-dead-letter-exchange' "
                                  f"in queue '{queue}' in vhost '{vhost}'")
    if string("x-dead-letter-routing-key") is not None and dlx is None:
        raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")


def validate_consumer_arguments(queue: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    """basic.consume arguments every queue type checks, with RabbitMQ's 406 texts
    (rabbit_amqqueue:check_consume_arguments)."""
    def bad(arg: str, why: str) -> Exception:
        return precondition_failed(f"invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}")

    if "x-priority" in arguments and not _is_int(arguments["x-priority"]):
        raise bad("x-priority", f'"expected integer, got {amqp_type(arguments["x-priority"])}"')
    failover = arguments.get("x-cancel-on-ha-failover", False)
    if not isinstance(failover, bool):
        raise bad("x-cancel-on-ha-failover", f"{{unacceptable_type,{amqp_type(failover)}}}")
