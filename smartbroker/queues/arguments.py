"""Validation of queue ``x-`` arguments, with RabbitMQ's 406 messages (texts taken from
RabbitMQ 3.10: type errors name the AMQP field type, as the client sent it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.message import Message
from smartbroker.protocol.field_types import amqp_type

_NON_NEGATIVE_INTS = ("x-message-ttl", "x-max-length", "x-max-length-bytes", "x-delivery-limit")
# rabbit_misc:check_expiry (RabbitMQ 3.10): TTLs, x-expires and per-message expiration are
# at most ten years, in milliseconds
MAX_EXPIRY = 315_360_000_000
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")
QUEUE_MODES = ("default", "lazy")
# rabbit_queue_location:queue_leader_locators(): where a queue's leader goes in a cluster
# (cluster/placement.py); the last three are deprecated and mean "balanced". Checked on a
# single node too, as RabbitMQ checks them on one.
LEADER_LOCATORS = ("client-local", "balanced", "random", "least-leaders", "min-masters")


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
    for arg in ("x-message-ttl", "x-expires"):
        value = arguments.get(arg)
        if value is not None and value > MAX_EXPIRY:
            raise bad(arg, f"{{value_too_large,{value}}}")
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
    if "x-queue-leader-locator" in arguments:
        check_leader_locator(queue, vhost, arguments["x-queue-leader-locator"])
    if "x-single-active-consumer" in arguments and not isinstance(arguments["x-single-active-consumer"], bool):
        raise bad("x-single-active-consumer",
                  f"{{unacceptable_type,{amqp_type(arguments['x-single-active-consumer'])}}}")
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str | bytes):
        raise precondition_failed(f"invalid type '{amqp_type(dlx)}' for arg 'x-dead-letter-exchange' "
                                  f"in queue '{queue}' in vhost '{vhost}'")
    if string("x-dead-letter-routing-key") is not None and dlx is None:
        raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")


def check_leader_locator(queue: str, vhost: str, value: Any) -> None:
    """``x-queue-leader-locator``: RabbitMQ's check_queue_leader_locator_arg and 406 texts."""
    where = f"invalid arg 'x-queue-leader-locator' for queue '{queue}' in vhost '{vhost}'"
    if not isinstance(value, str | bytes):
        raise precondition_failed(f"{where}: {{unacceptable_type,{amqp_type(value)}}}")
    if _text(value) not in LEADER_LOCATORS:
        raise precondition_failed(f"{where}: invalid_queue_locator_arg")


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


# -- per-message ``expiration`` ---------------------------------------------------------------
# rabbit_basic:parse_expiration: string:to_integer on the raw bytes (an optional sign, ASCII
# digits, leading zeros allowed, no spaces), nothing may be left over, then check_expiry.
# The 406 text prints the error with Erlang's ~p, which wraps a term that does not fit on
# the 80-column line it starts on; RabbitMQ cuts reply texts to 255 bytes ending in "...".
_EXPIRATION_PREFIX = "invalid expiration '"
_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v",
            8: "\\b", 12: "\\f", 27: "\\e"}


def parse_expiration(raw: str) -> int | None:
    """Milliseconds, or None when RabbitMQ would refuse it (see expiration_error)."""
    digits = raw[1:] if raw[:1] in ("+", "-") else raw
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(raw)
    return value if 0 <= value <= MAX_EXPIRY else None


def expiration_error(raw: str) -> str | None:
    """RabbitMQ's 406 text for an ``expiration`` it refuses, or None if it is accepted."""
    data = raw.encode()
    pos = 1 if data[:1] in (b"+", b"-") else 0
    end = pos
    while end < len(data) and 48 <= data[end] <= 57:
        end += 1
    if end == pos:
        return _truncated(f"{_EXPIRATION_PREFIX}{raw}': no_integer")
    value, rest = int(data[:end]), data[end:]
    if rest:
        term = ("leftover_string", _erlang_string(rest))
    elif value < 0:
        term = ("value_negative", str(value))
    elif value > MAX_EXPIRY:
        term = ("value_too_large", str(value))
    else:
        return None
    column = len(_EXPIRATION_PREFIX) + len(data) + 3  # where ~p starts printing
    return _truncated(f"{_EXPIRATION_PREFIX}{raw}': {_erlang_pair(*term, column)}")


def _erlang_pair(tag: str, value: str, column: int, line: int = 80) -> str:
    """``{tag,value}`` as io_lib's ~p prints it from ``column``: on one line if it fits,
    else the second element on its own line under the first."""
    flat = f"{{{tag},{value}}}"
    if column + len(flat) <= line - 2:
        return flat
    return f"{{{tag},\n{' ' * (column + 1)}{value}}}"


def _erlang_string(data: bytes) -> str:
    """A byte list as ~p prints it: a quoted string when every byte is printable Latin-1,
    else a list of integers (long lists are not wrapped here, unlike RabbitMQ)."""
    if all(32 <= b <= 126 or b >= 160 or b in _ESCAPES for b in data):
        return '"' + data.decode(errors="replace").translate(_ESCAPES) + '"'
    return "[" + ",".join(str(b) for b in data) + "]"


def _truncated(text: str, prefix: str = "PRECONDITION_FAILED - ") -> str:
    if len(prefix) + len(text) <= 255:
        return text
    return text[:252 - len(prefix)] + "..."


# Arguments whose value must match on redeclare (RabbitMQ's equivalence check)
EQUIVALENCE_ARGUMENTS = frozenset({
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority",
    "x-single-active-consumer", "x-queue-type", "x-delivery-limit",
})


def message_ttl_ms(message: Message) -> int | None:
    """A message's own TTL (its ``expiration`` property), in ms."""
    expiration = message.expiration
    return None if expiration is None else parse_expiration(expiration)
