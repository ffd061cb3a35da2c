"""Kafka topic configs a stream keeps in its overrides only: validated as Kafka's LogConfig
validates them (type, range, allowed values), stored, described, and acted on where this
broker can honour them cheaply and honestly.

Client suites and tools (Kafka Streams' internal topics, Connect, Debezium, librdkafka's
0081_admin) create topics with these; refusing them made those tools fail where Kafka works.
None is a stream queue argument (AMQP declares cannot set them), so, like
``compression.type``, each lives in ``StreamMeta.overrides`` under ``x-<name with dashes>``
(``flush.ms`` -> ``x-flush-ms``), CreateTopics' included; an unset one describes as Kafka's
default (``flush.ms``: the broker's ``stream_flush_interval_ms``, what it really does).

Acted on:

* ``flush.ms``: the partitions' idle fsync interval (``SegmentLog(idle_fsync_ms=...)``):
  data nobody waits for is fsynced that many ms after it was written out, as Kafka's
  per-topic fsync policy. Applied at once and after a restart (queues/stream_storage.py).
* ``flush.messages=1``: unwaited data is fsynced as soon as it is written out (within the
  5 ms group-commit interval), as ``flush.ms=0``. Produce with acks=1/all and persistent
  AMQP publishes are answered only after their fsync whatever this says; acks=0 and
  transient AMQP publishes are not held back for it. Other values are stored only: the
  fsync interval is time-based here, not a message count.
* ``min.insync.replicas``: every partition has one replica, so a value above 1 makes
  Produce with acks=all fail with NOT_ENOUGH_REPLICAS (19), as Kafka does with one broker
  in sync; acks=0/1 are unaffected.
* ``message.timestamp.type=LogAppendTime``: records carry the broker's append time;
  ``message.timestamp.before.max.ms``, ``after.max.ms`` and ``difference.max.ms`` bound
  CreateTime records' timestamps (INVALID_TIMESTAMP): timestamps.py.

Stored and described, not acted on (the README's Kafka section says why for each):
``file.delete.delay.ms``, ``segment.index.bytes``, ``segment.jitter.ms``, ``segment.ms``,
``index.interval.bytes``, ``preallocate``, ``message.downconversion.enable``,
``unclean.leader.election.enable``, the two ``*.replication.throttled.replicas``,
``max.compaction.lag.ms``, ``min.compaction.lag.ms`` and ``min.cleanable.dirty.ratio``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.kafka.timestamps import AFTER, BEFORE, DIFFERENCE, TIMESTAMP_TYPE
from smartbroker.queues.stream_storage import FLUSH_MESSAGES, FLUSH_MS

BOOLEAN, STRING, INT, LONG, DOUBLE, LIST = 1, 2, 3, 5, 6, 7  # Kafka's ConfigType numbers
_LONG_MAX, _INT_MAX = 2**63 - 1, 2**31 - 1
_THROTTLED = re.compile(r"(\d+:\d+)?")
MIN_INSYNC = "x-min-insync-replicas"


class StoredConfigError(ValueError):
    """A value Kafka refuses: INVALID_CONFIG with this message."""


@dataclass(frozen=True)
class Stored:
    """One config kept in the overrides: its type, Kafka's default and its check."""

    name: str
    config_type: int
    default: str
    check: Callable[[str, str], Any]  # (name, value) -> what is stored; raises

    @property
    def argument(self) -> str:
        return "x-" + self.name.replace(".", "-")


def _bad(name: str, value: str, why: str) -> StoredConfigError:
    return StoredConfigError(f"Invalid value {value} for configuration {name}: {why}")


def _number(name: str, value: str, top: int, kind: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise _bad(name, value, f"Not a number of type {kind}") from None
    if not -top - 1 <= number <= top:
        raise _bad(name, value, f"Not a number of type {kind}")
    return number


def _at_least(low: int, kind: str = "LONG") -> Callable[[str, str], int]:
    top = _LONG_MAX if kind == "LONG" else _INT_MAX

    def check(name: str, value: str) -> int:
        number = _number(name, value, top, kind)
        if number < low:
            raise _bad(name, str(number), f"Value must be at least {low}")
        return number
    return check


def _boolean(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise _bad(name, value, "Expected value to be either true or false")
    return text == "true"


def _ratio(name: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise _bad(name, value, "Not a number of type DOUBLE") from None
    if not 0 <= number <= 1:
        raise _bad(name, value, "Value must be at least 0" if number < 0
                   else "Value must be no more than 1")
    return number


def _timestamp_type(name: str, value: str) -> str:
    text = value.strip()
    if text not in ("CreateTime", "LogAppendTime"):
        raise _bad(name, value, "String must be one of: CreateTime, LogAppendTime")
    return text


def _throttled(name: str, value: str) -> str:
    items = [v.strip() for v in value.split(",")]
    if not ("".join(items) == "*" or all(_THROTTLED.fullmatch(v) for v in items)):
        raise _bad(name, value, f"{name} must be the literal '*' or a list of replicas in the "
                   "following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...")
    return ",".join(v for v in items if v)


_LONG_MAX_TEXT = str(_LONG_MAX)
STORED: dict[str, Stored] = {s.name: s for s in (
    Stored("flush.ms", LONG, _LONG_MAX_TEXT, _at_least(0)),  # unset: the broker's interval
    Stored("flush.messages", LONG, _LONG_MAX_TEXT, _at_least(1)),
    Stored("min.insync.replicas", INT, "1", _at_least(1, "INT")),
    Stored("file.delete.delay.ms", LONG, "60000", _at_least(0)),
    Stored("segment.index.bytes", INT, "10485760", _at_least(4, "INT")),
    Stored("segment.jitter.ms", LONG, "0", _at_least(0)),
    Stored("segment.ms", LONG, "604800000", _at_least(1)),
    Stored("index.interval.bytes", INT, "4096", _at_least(0, "INT")),
    Stored("preallocate", BOOLEAN, "false", _boolean),
    Stored("message.downconversion.enable", BOOLEAN, "true", _boolean),
    Stored("unclean.leader.election.enable", BOOLEAN, "false", _boolean),
    Stored("leader.replication.throttled.replicas", LIST, "", _throttled),
    Stored("follower.replication.throttled.replicas", LIST, "", _throttled),
    Stored("max.compaction.lag.ms", LONG, _LONG_MAX_TEXT, _at_least(1)),
    Stored("min.compaction.lag.ms", LONG, "0", _at_least(0)),
    Stored("min.cleanable.dirty.ratio", DOUBLE, "0.5", _ratio),
    Stored("message.timestamp.type", STRING, "CreateTime", _timestamp_type),
    Stored("message.timestamp.difference.max.ms", LONG, _LONG_MAX_TEXT, _at_least(0)),
    Stored("message.timestamp.before.max.ms", LONG, _LONG_MAX_TEXT, _at_least(0)),
    Stored("message.timestamp.after.max.ms", LONG, _LONG_MAX_TEXT, _at_least(0)),
)}
ARGUMENTS = frozenset(s.argument for s in STORED.values())
assert {FLUSH_MS, FLUSH_MESSAGES, MIN_INSYNC, TIMESTAMP_TYPE, BEFORE, AFTER,  # names read
        DIFFERENCE} <= ARGUMENTS  # elsewhere


def parse(name: str, value: str) -> Any:
    """The value to store for ``name`` (a key of ``STORED``); raises StoredConfigError."""
    return STORED[name].check(name, value)


def described(value: Any) -> str:
    """A stored value as DescribeConfigs shows it (Java's spelling of booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def default_of(spec: Stored, flush_interval_ms: int | None) -> str:
    """What an unset config describes as: Kafka's default, but ``flush.ms`` as what the
    broker does (its ``stream_flush_interval_ms``) when it is known."""
    if spec.name == "flush.ms" and flush_interval_ms is not None:
        return str(flush_interval_ms)
    return spec.default


def insync_shortfall(overrides: Mapping[str, Any]) -> int | None:
    """``min.insync.replicas`` when one replica (ours) cannot meet it, else None. Read by
    Produce only for acks=all on a stream that has overrides."""
    wanted = overrides.get(MIN_INSYNC)
    return wanted if isinstance(wanted, int) and wanted > 1 else None
