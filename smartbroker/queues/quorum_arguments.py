"""A quorum queue's declare and consume arguments, as RabbitMQ 3.10.8 checks them
(rabbit_quorum_queue.erl): its own arguments validated, the other types' refused by name,
with RabbitMQ's 406 texts. Kept apart from ``quorum.py``'s queue behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.protocol.field_types import amqp_type
from smartbroker.queues.arguments import validate_queue_arguments

# rabbit_quorum_queue:capabilities() queue_arguments (3.10.8)
QUORUM_ARGUMENTS = frozenset({
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
    "x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
    "x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
    "x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl", "x-queue-leader-locator",
})
# the other types' declare arguments: RabbitMQ refuses these by name, and keeps any other
# (unknown) x- argument, as for classic queues
OTHER_TYPES_ARGUMENTS = frozenset({
    "x-max-priority", "x-queue-mode", "x-queue-version", "x-queue-master-locator",
    "x-max-age", "x-stream-max-segment-size-bytes", "x-initial-cluster-size",
})
# basic.consume arguments of the other types (classic, stream), refused the same way
OTHER_TYPES_CONSUMER_ARGUMENTS = ("x-cancel-on-ha-failover", "x-stream-offset")
DLX_STRATEGIES = ("at-most-once", "at-least-once")
# 3.10 has no validator for it: a negative limit acts as 0 (the first return dead-letters),
# a non-integer as no limit (QueueSettings reads it so)
UNCHECKED = frozenset({"x-delivery-limit"})
RABBIT_TYPE = "rabbit_quorum_queue"
UNLIMITED_PREFETCH = 2000  # what a consumer's prefetch 0 means (rabbit_quorum_queue:consume)


def check_quorum_arguments(queue: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    """rabbit_amqqueue:check_declare_arguments for the quorum type, with its 406 texts."""
    def bad(arg: str, why: str) -> Exception:
        return precondition_failed(f"invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}")

    validate_queue_arguments(queue, vhost, {k: v for k, v in arguments.items()
                                            if k in QUORUM_ARGUMENTS and k not in UNCHECKED})
    for arg in ("x-max-in-memory-length", "x-max-in-memory-bytes", "x-quorum-initial-group-size"):
        value = arguments.get(arg)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(arg, f'"expected integer, got {amqp_type(value)}"')
        if value < 0:
            raise bad(arg, f"{{value_negative,{value}}}")
        if value == 0 and arg == "x-quorum-initial-group-size":
            raise bad(arg, "{value_zero,0}")
    strategy = arguments.get("x-dead-letter-strategy")
    if strategy is not None:
        if not isinstance(strategy, str | bytes):
            raise bad("x-dead-letter-strategy", f"{{unacceptable_type,{amqp_type(strategy)}}}")
        text = strategy.decode(errors="replace") if isinstance(strategy, bytes) else strategy
        if text not in DLX_STRATEGIES:
            raise bad("x-dead-letter-strategy", "invalid_dlx_strategy")
    for arg in arguments:
        if arg in OTHER_TYPES_ARGUMENTS:
            raise precondition_failed(f"invalid arg '{arg}' for queue '{queue}' in vhost "
                                      f"'{vhost}' of queue type {RABBIT_TYPE}")
