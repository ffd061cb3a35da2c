"""Stream queue declaration arguments and consumer offset specs, with RabbitMQ's 406s."""

from __future__ import annotations

import dataclasses
import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.protocol.field_types import amqp_type
from smartbroker.queues.arguments import check_leader_locator, check_replicated_properties

STREAM_ARGUMENTS = frozenset({
    "x-queue-type", "x-partitions", "x-max-age", "x-max-length-bytes",
    "x-stream-max-segment-size-bytes", "x-cleanup-policy", "x-delete-retention",
    "x-initial-cluster-size", "x-queue-leader-locator",
    "x-max-message-bytes",  # Kafka's max.message.bytes (kafka/configs.py); an extension
})
EQUIVALENCE_ARGUMENTS = frozenset({"x-queue-type", "x-partitions", "x-max-age",
                                   "x-max-length-bytes", "x-stream-max-segment-size-bytes",
                                   "x-cleanup-policy"})
# policy keys RabbitMQ applies to streams (rabbit_stream_queue:make_stream_conf); each is
# combined with the queue argument by taking the smaller value
STREAM_POLICY_KEYS = ("max-age", "max-length-bytes", "stream-max-segment-size-bytes")
# "": neither (Kafka's empty cleanup.policy): nothing deleted or compacted, kept for ever
CLEANUP_POLICIES = ("delete", "compact", "compact,delete", "delete,compact", "")
_AGE = re.compile(r"^(\d+)([YMDhms])$")
_AGE_SECONDS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
# x-stream-max-segment-size-bytes: RabbitMQ refuses values above 3 GB (its text below) and
# accepts any positive value under it. Refusing small ones would break clients that work
# with RabbitMQ, so a value under one page is raised to a page instead: a smaller segment
# still costs a file (and a block) of its own while adding nothing. Open segment files are
# bounded separately (store/handles.py), so small segments no longer cost descriptors.
MIN_SEGMENT_BYTES = 4096
MAX_SEGMENT_BYTES = 3_000_000_000


def parse_age(value: Any) -> float | None:
    """``"7D"`` -> seconds; None when it is not an age string (units Y M D h m s)."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None
    match = _AGE.match(value)
    if match is None:
        return None
    return int(match.group(1)) * _AGE_SECONDS[match.group(2)]


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StreamSettings:
    partitions: int = 1
    max_age: float | None = None  # seconds
    max_length_bytes: int | None = None  # per partition
    segment_bytes: int = 500_000_000
    compact: bool = False
    delete: bool = True
    delete_retention: float = 86400.0  # tombstones kept this long (seconds)

    @classmethod
    def parse(cls, queue: str, vhost: str, durable: bool, exclusive: bool, auto_delete: bool,
              arguments: Mapping[str, Any]) -> StreamSettings:
        """The declare's settings, RabbitMQ's 406s (unknown arguments are refused before,
        by ``queues.capabilities.check_arguments`` reading ``STREAM_ARGUMENTS``)."""
        where = f"for queue '{queue}' in vhost '{vhost}'"
        check_replicated_properties(queue, vhost, durable, exclusive, auto_delete)

        def bad(arg: str, why: str) -> Exception:
            return precondition_failed(f"invalid arg '{arg}' {where}: {why}")

        partitions = arguments.get("x-partitions", 1)
        if not _is_int(partitions) or partitions < 1:
            raise bad("x-partitions", f"expected an integer >= 1, got {partitions!r}")
        if partitions > 1024:
            raise bad("x-partitions", f"at most 1024 partitions, got {partitions}")
        max_age = None
        if "x-max-age" in arguments:
            max_age = parse_age(arguments["x-max-age"])
            if max_age is None:
                raise bad("x-max-age", f"expected an age like 7D, 12h, 30m or 45s (units Y M D h m s), "
                                       f"got {_text(arguments['x-max-age'])!r}")
        ints = {}
        for arg in ("x-max-length-bytes", "x-stream-max-segment-size-bytes"):
            if arg in arguments:
                value = arguments[arg]
                if not _is_int(value):
                    raise bad(arg, f'"expected integer, got {type(value).__name__}"')
                if value <= 0:
                    raise bad(arg, f"expected a positive integer, got {value}")
                ints[arg] = value
        size = arguments.get("x-max-message-bytes", 0)
        if not _is_int(size) or not 0 <= size <= 2**31 - 1:
            raise bad("x-max-message-bytes", f"expected an integer from 0 to 2147483647, got {size!r}")
        if ints.get("x-stream-max-segment-size-bytes", 0) > MAX_SEGMENT_BYTES:
            raise precondition_failed("Exceeded max value for x-stream-max-segment-size-bytes")
        if "x-queue-leader-locator" in arguments:
            check_leader_locator(queue, vhost, arguments["x-queue-leader-locator"])
        if "x-initial-cluster-size" in arguments:  # rabbit_amqqueue's check_initial_cluster_size_arg
            size = arguments["x-initial-cluster-size"]
            if not _is_int(size):
                raise bad("x-initial-cluster-size", f'"expected integer, got {amqp_type(size)}"')
            if size <= 0:
                raise bad("x-initial-cluster-size",
                          "{value_zero,0}" if size == 0 else f"{{value_negative,{size}}}")
        policy = _text(arguments.get("x-cleanup-policy", "delete"))
        if policy not in CLEANUP_POLICIES:
            raise bad("x-cleanup-policy", f"expected delete, compact or compact,delete, got {policy!r}")
        retention = 86400.0
        if "x-delete-retention" in arguments:
            parsed = parse_age(arguments["x-delete-retention"])
            if parsed is None:
                raise bad("x-delete-retention", "expected an age like 1D or 12h")
            retention = parsed
        return cls(partitions=partitions, max_age=max_age,
                   max_length_bytes=ints.get("x-max-length-bytes"),
                   segment_bytes=max(MIN_SEGMENT_BYTES,
                                     ints.get("x-stream-max-segment-size-bytes", 500_000_000)),
                   compact="compact" in policy, delete="delete" in policy,
                   delete_retention=retention)


def policy_settings(declared: StreamSettings, policy: Mapping[str, Any] | None) -> StreamSettings:
    """The declared settings with a policy's stream keys applied (the smaller value wins,
    as RabbitMQ's ``args_policy_lookup(..., fun min/2)``); invalid values were refused
    when the policy was set (``policy_key_error``)."""
    if not policy:
        return declared
    changes: dict[str, Any] = {}
    age = parse_age(policy.get("max-age"))
    if age is not None:
        changes["max_age"] = age if declared.max_age is None else min(age, declared.max_age)
    size = policy.get("max-length-bytes")
    if _is_int(size) and size > 0:
        changes["max_length_bytes"] = (size if declared.max_length_bytes is None
                                       else min(size, declared.max_length_bytes))
    segment = policy.get("stream-max-segment-size-bytes")
    if _is_int(segment) and 0 < segment <= MAX_SEGMENT_BYTES:
        changes["segment_bytes"] = max(MIN_SEGMENT_BYTES, min(segment, declared.segment_bytes))
    return dataclasses.replace(declared, **changes) if changes else declared


def policy_key_error(key: str, value: Any) -> str | None:
    """Why a policy value for a stream key is refused, or None if it is fine."""
    if key == "max-age" and parse_age(value) is None:
        return f"'max-age' must be an age like 7D, 12h, 30m or 45s (units Y M D h m s), got {value!r}"
    if key == "stream-max-segment-size-bytes" and not (_is_int(value) and 0 < value <= MAX_SEGMENT_BYTES):
        return f"'{key}' must be an integer between 1 and {MAX_SEGMENT_BYTES}, got {value!r}"
    return None


@dataclass(frozen=True)
class OffsetSpec:
    """Where a reader starts: ``first``, ``last``, ``next``, an offset, or a time (ms)."""

    kind: str  # first | last | next | offset | timestamp
    value: int = 0


def parse_offset_spec(value: Any) -> OffsetSpec:
    value = _text(value)
    if value is None or value == "next":
        return OffsetSpec("next")
    if value in ("first", "last"):
        return OffsetSpec(value)
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return OffsetSpec("timestamp", int(stamp.timestamp() * 1000))
    if _is_int(value):
        if value < 0:
            raise precondition_failed(f"invalid x-stream-offset {value}: offsets start at 0")
        return OffsetSpec("offset", value)
    seconds = parse_age(value)
    if seconds is not None:
        return OffsetSpec("timestamp", int((time.time() - seconds) * 1000))
    raise precondition_failed(f"invalid x-stream-offset {value!r}: expected first, last, next, "
                              "an offset, a timestamp or an interval like 10m")


def check_reader_arguments(arguments: Mapping[str, Any], queue: str, partitions: int) -> None:
    """basic.consume arguments of a stream reader: the start offset, one partition of those
    the stream has, and a group name (UTF-8, never with a partition), RabbitMQ's 406s."""
    parse_offset_spec(arguments.get("x-stream-offset"))
    group = arguments.get("x-consumer-group")
    partition = arguments.get("x-stream-partition")
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool)
                                  or not 0 <= partition < partitions):
        raise precondition_failed(f"invalid x-stream-partition {partition!r}: queue "
                                  f"'{queue}' has {partitions} partition(s)")
    if group is not None and partition is not None:
        raise precondition_failed("x-stream-partition and x-consumer-group cannot be combined")
    if group is not None and not isinstance(group, str):  # bytes: a long string not UTF-8
        raise precondition_failed("x-consumer-group must be a UTF-8 string")
