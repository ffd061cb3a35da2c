"""Validation of queue ``x-`` arguments, with RabbitMQ's 406 messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.errors import precondition_failed

_NON_NEGATIVE_INTS = ("x-message-ttl", "x-max-length", "x-max-length-bytes", "x-delivery-limit")
_POSITIVE_INTS = ("x-expires",)
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def validate_queue_arguments(queue: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    def bad(arg: str, why: str) -> Exception:
        return precondition_failed(f"invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}")

    for arg in _NON_NEGATIVE_INTS:
        if arg in arguments:
            value = arguments[arg]
            if not _is_int(value):
                raise bad(arg, f"{{unacceptable_type,{type(value).__name__}}}")
            if value < 0:
                raise bad(arg, f"{{value_negative,{value}}}")
    for arg in _POSITIVE_INTS:
        if arg in arguments:
            value = arguments[arg]
            if not _is_int(value):
                raise bad(arg, f"{{unacceptable_type,{type(value).__name__}}}")
            if value <= 0:
                raise bad(arg, f"{{value_zero_or_less,{value}}}")
    if "x-overflow" in arguments and _text(arguments["x-overflow"]) not in OVERFLOW_MODES:
        raise bad("x-overflow", f"{{unacceptable_value,{_text(arguments['x-overflow'])}}}")
    if "x-max-priority" in arguments:
        value = arguments["x-max-priority"]
        if not _is_int(value):
            raise bad("x-max-priority", f"{{unacceptable_type,{type(value).__name__}}}")
        if not 0 <= value <= 255:
            raise bad("x-max-priority", f"{{value_out_of_range,{value}}}")
    if "x-queue-type" in arguments and _text(arguments["x-queue-type"]) not in QUEUE_TYPES:
        raise bad("x-queue-type", f"{{unacceptable_value,{_text(arguments['x-queue-type'])}}}")
    if "x-single-active-consumer" in arguments and not isinstance(arguments["x-single-active-consumer"], bool):
        value = arguments["x-single-active-consumer"]
        raise bad("x-single-active-consumer", f"{{unacceptable_type,{type(value).__name__}}}")
    for arg in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        if arg in arguments and not isinstance(arguments[arg], str | bytes):
            raise bad(arg, f"{{unacceptable_type,{type(arguments[arg]).__name__}}}")
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise precondition_failed(
            f"invalid arg 'x-dead-letter-routing-key' for queue '{queue}' in vhost '{vhost}': "
            "Missing dead-letter-exchange")
