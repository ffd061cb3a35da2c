"""Names, keys and values the API accepts: what AMQP can carry.

A short string is at most 255 bytes: RabbitMQ's API refuses a queue name over that with
this text; we refuse exchange names, routing/binding keys and short-string properties the
same way (RabbitMQ stores those, but no AMQP client could name, match or receive them).

Numbers: an AMQP field table carries integers of at most 64 bits and finite doubles. JSON
has no such bound (RabbitMQ keeps Erlang bignums), so anything wider is refused with 400
when it arrives, before it can reach a queue, the store or an encoder."""

from __future__ import annotations

import math
from typing import Any

from smartbroker.management.errors import bad_request

SHORTSTR_MAX = 255
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 64 - 1
SHORTSTR_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to",
                       "expiration", "message_id", "type", "user_id", "app_id", "cluster_id")
OCTET_PROPERTIES = ("delivery_mode", "priority")


def check_name(what: str, value: str) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > SHORTSTR_MAX:
        raise bad_request(f"{what} should be less than {SHORTSTR_MAX} bytes, actually was {size}\n")


def check_numbers(value: Any, where: str = "body") -> None:
    """Refuse integers beyond 64 bits and non-finite numbers anywhere in ``value`` (walked
    without recursion: a deeply nested body must not exhaust the stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise bad_request(f"{where}: integer {item} is out of range (AMQP carries at "
                                  f"most 64 bits)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise bad_request(f"{where}: {item} is not a finite number")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def check_properties(props: dict[str, Any]) -> None:
    """Message properties of an HTTP publish, bounded as basic.publish would carry them."""
    check_numbers(props, "properties")
    for key in SHORTSTR_PROPERTIES:
        value = props.get(key)
        if isinstance(value, str):
            check_name(key, value)
    for key in OCTET_PROPERTIES:
        value = props.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 255:
            raise bad_request(f"property '{key}' must be between 0 and 255, got {value}")
    stamp = props.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and not (
            0 <= stamp <= 253402300799):  # 9999-12-31: what a datetime can hold
        raise bad_request(f"property 'timestamp' out of range: {stamp}")
