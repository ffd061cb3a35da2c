"""A classic queue's effective settings: its ``x-`` arguments, else the matching policy.

Queue arguments win over policy keys, except numeric limits (TTL, expires, lengths),
where the smaller value applies, as in RabbitMQ. Recomputed whenever the queue's
policy changes, so the hot path reads plain attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.message import Message, with_delivery_count

# policy key -> queue argument
POLICY_KEYS = {
    "message-ttl": "x-message-ttl",
    "expires": "x-expires",
    "max-length": "x-max-length",
    "max-length-bytes": "x-max-length-bytes",
    "overflow": "x-overflow",
    "dead-letter-exchange": "x-dead-letter-exchange",
    "dead-letter-routing-key": "x-dead-letter-routing-key",
    "delivery-limit": "x-delivery-limit",
    # quorum queues' (RabbitMQ 3.10 accepts them for any queue; others ignore them)
    "dead-letter-strategy": "x-dead-letter-strategy",
    "max-in-memory-length": "x-max-in-memory-length",
    "max-in-memory-bytes": "x-max-in-memory-bytes",
}
POLICY_REFUSED = {"max-priority": "x-max-priority",
                  "single-active-consumer": "x-single-active-consumer"}


# numeric limits where RabbitMQ applies the smaller of the argument and the policy
MIN_OF_BOTH = frozenset({"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                         "x-delivery-limit"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class QueueSettings:
    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    delivery_limit: int | None = None
    max_priority: int = 0
    single_active_consumer: bool = False
    quorum: bool = False  # declared x-queue-type quorum (served by a classic queue)

    @classmethod
    def resolve(cls, arguments: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> QueueSettings:
        merged: dict[str, Any] = {}
        for key, arg in POLICY_KEYS.items():
            if policy and key in policy:
                merged[arg] = policy[key]
        for arg, value in arguments.items():
            if value is None:
                continue
            current = merged.get(arg)
            if arg in MIN_OF_BOTH and _is_int(current) and _is_int(value):
                merged[arg] = min(current, value)  # RabbitMQ: the stricter limit wins
            else:
                merged[arg] = value

        def num(arg: str) -> int | None:
            value = merged.get(arg)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        dlx = _text(merged.get("x-dead-letter-exchange"))
        dlrk = _text(merged.get("x-dead-letter-routing-key"))
        max_priority = num("x-max-priority") or 0
        return cls(
            message_ttl=num("x-message-ttl"),
            expires=num("x-expires"),
            max_length=num("x-max-length"),
            max_length_bytes=num("x-max-length-bytes"),
            overflow=_text(merged.get("x-overflow")) or "drop-head",
            dead_letter_exchange=dlx if isinstance(dlx, str) else None,
            dead_letter_routing_key=dlrk if isinstance(dlrk, str) else None,
            delivery_limit=num("x-delivery-limit"),
            max_priority=min(max_priority, 255),
            single_active_consumer=bool(merged.get("x-single-active-consumer")),
            quorum=_text(arguments.get("x-queue-type")) == "quorum",
        )

    def delivery_message(self, message: Message, delivery_count: int, on_get: bool) -> Message:
        """The message as delivered. Queues that count deliveries (quorum type, or a
        delivery limit) add ``x-delivery-count`` on redeliveries; RabbitMQ's quorum queues
        add it to every ``basic.get``, even the first (value 0)."""
        if not (self.quorum or self.delivery_limit is not None):
            return message
        if delivery_count <= 1 and not (on_get and self.quorum):
            return message
        return with_delivery_count(message, delivery_count - 1)

    @property
    def has_limits(self) -> bool:
        return self.max_length is not None or self.max_length_bytes is not None
