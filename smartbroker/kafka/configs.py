"""Topic configs <-> stream queue arguments, both ways.

A topic's configs are its stream's declaration arguments (so a topic created by Kafka and a
stream declared over AMQP describe the same way) with what AlterConfigs changed laid over
them (``overrides``; kept beside the declaration, see ``alter_configs.py``):

=================== =================================== =========================
Kafka config        queue argument                      unset (our default)
=================== =================================== =========================
retention.ms        x-max-age (whole seconds, as "7D")  -1: kept for ever
retention.bytes     x-max-length-bytes (per partition)  -1: no size limit
segment.bytes       x-stream-max-segment-size-bytes     500000000
cleanup.policy      x-cleanup-policy                    delete
delete.retention.ms x-delete-retention (whole seconds)  86400000 (1D)
max.message.bytes   x-max-message-bytes                 the broker's max_message_size
compression.type    x-compression-type (overrides only) producer
=================== =================================== =========================

Kafka takes any long for ``retention.ms`` and ``delete.retention.ms``; stream ages are
whole seconds, so a value that is not is rounded *up* to the next second (900 ms keeps
data and tombstones 1 s, and describes as 1000): never shorter than asked, and Kafka's own
retention checks run only every few minutes anyway.

``max.message.bytes`` limits a topic's record batches below the broker's
``max_message_size`` (Produce enforces the lower of the two: the broker cannot hold more).
``compression.type`` is Kafka's: ``producer`` stores batches as the producer compressed
them (the fast path, no record decoded); ``uncompressed``, ``gzip``, ``snappy``, ``lz4`` or
``zstd`` make Produce re-encode a batch of another codec to that one before storing it, as
Kafka's LogValidator does (``recompress.py``). It is not a stream queue argument (AMQP
declares cannot set it; AMQP publishes are stored uncompressed whatever it says), so it is
kept only in the stream's overrides (``OVERRIDE_ONLY``), CreateTopics' included.
``message.format.version`` is accepted and not stored: Kafka 3.x validates and then
ignores it (always record format v2); it describes as Kafka 3.x's default, ``3.0-IV1``.

An empty ``cleanup.policy`` (Kafka accepts an empty list) is neither delete nor compact:
``x-cleanup-policy`` "", nothing is deleted (whatever retention says) or compacted.
Kafka's other topic configs (``flush.ms``, ``min.insync.replicas``, ``segment.ms``...) are
validated, kept in the overrides and described by ``stored_configs.py``, which says which
are acted on. An unset config describes as what the stream actually does (a stream without
``x-max-age`` keeps everything: -1, not Kafka's seven days), marked as the default.
Any other config is refused with INVALID_CONFIG: an unknown name, or one Kafka knows that
this broker does not implement (tiered storage's: said so in the message).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.kafka import stored_configs
from smartbroker.queues.stream_args import CLEANUP_POLICIES, parse_age

# Kafka's ConfigType (DescribeConfigs v3+) and ConfigSource numbers
BOOLEAN, STRING, INT, LONG, LIST = 1, 2, 3, 5, 7
SOURCE_TOPIC, SOURCE_STATIC_BROKER, SOURCE_DEFAULT = 1, 4, 5

# Kafka topic configs this broker does not implement (tiered storage): named in the refusal
KAFKA_TOPIC_CONFIGS = frozenset({"local.retention.bytes", "local.retention.ms",
                                 "remote.storage.enable"})
_UNITS = (("D", 86400), ("h", 3600), ("m", 60), ("s", 1))
_INT32_MAX = 2**31 - 1
# Kafka's MetadataVersion strings ("2.8", "3.0-IV1", "0.10.2-IV0", "3.6.1"; before 1.0 Kafka
# reads the first three parts and ignores more: "0.10.0.0")
_FORMAT_VERSION = re.compile(r"\d+(\.\d+){1,3}(-IV\d+)?")
MAX_MESSAGE_BYTES = "x-max-message-bytes"
COMPRESSION = "x-compression-type"
# Kafka's compression.type values -> the codec id a stored batch must have (None: as sent)
CODECS: dict[str, int | None] = {"producer": None, "uncompressed": 0, "gzip": 1,
                                 "snappy": 2, "lz4": 3, "zstd": 4}
# arguments kept in the stream's overrides only, never declared (not stream arguments)
OVERRIDE_ONLY = frozenset({COMPRESSION}) | stored_configs.ARGUMENTS


class ConfigError(ValueError):
    """A config refused: INVALID_CONFIG with this message."""


@dataclass(frozen=True)
class Mapped:
    """One supported config: its queue argument, type and what an unset one means."""

    name: str
    argument: str
    config_type: int
    default: str


MAPPED: dict[str, Mapped] = {m.name: m for m in (
    Mapped("retention.ms", "x-max-age", LONG, "-1"),
    Mapped("retention.bytes", "x-max-length-bytes", LONG, "-1"),
    Mapped("segment.bytes", "x-stream-max-segment-size-bytes", INT, "500000000"),
    Mapped("cleanup.policy", "x-cleanup-policy", LIST, "delete"),
    Mapped("delete.retention.ms", "x-delete-retention", LONG, "86400000"),
    Mapped("max.message.bytes", MAX_MESSAGE_BYTES, INT, "1048588"),  # Kafka's; ours: describe
    Mapped("compression.type", COMPRESSION, STRING, "producer"),
)}


def _ignored(value: str) -> None:
    """Check message.format.version, accepted and not stored (the module docstring)."""
    if not _FORMAT_VERSION.fullmatch(value.strip()):
        raise ConfigError(f"Invalid value {value} for configuration message.format.version: "
                          "not a Kafka version such as 3.0-IV1 or 2.8")


# accepted, validated, not stored; described with these values (Kafka 3.x's defaults)
IGNORED: dict[str, str] = {"message.format.version": "3.0-IV1"}


@dataclass(frozen=True)
class Entry:
    """A config as DescribeConfigs (and CreateTopics v5+) shows it."""

    name: str
    value: str
    is_default: bool
    config_type: int

    @property
    def source(self) -> int:
        return SOURCE_DEFAULT if self.is_default else SOURCE_TOPIC


def age_string(ms: int) -> str:
    """Milliseconds as RabbitMQ's age string in the largest exact unit ("7D", "90m")."""
    seconds = ms // 1000
    for unit, size in _UNITS:
        if seconds % size == 0 and (seconds or unit == "s"):
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: 's' divides everything")


def _long(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"Invalid value {value} for configuration {name}: "
                          "Not a number of type LONG") from None


def _duration(name: str, value: str, *, infinite: bool) -> str | None:
    ms = _long(name, value)
    if ms == -1 and infinite:
        return None
    if ms < 0:
        raise ConfigError(f"Invalid value {ms} for configuration {name}: Value must be at least "
                          f"{-1 if infinite else 0}")
    return age_string(-(-ms // 1000) * 1000)  # whole seconds, rounded up (module docstring)


def _argument(m: Mapped, value: str) -> Any:
    """The queue argument for one config value; None: leave the argument unset."""
    if m.name in ("retention.ms", "delete.retention.ms"):
        return _duration(m.name, value, infinite=m.name == "retention.ms")
    if m.name == "retention.bytes":
        size = _long(m.name, value)
        if size == -1:
            return None
        if size <= 0:
            raise ConfigError(f"Invalid value {size} for configuration retention.bytes: "
                              "-1 (no limit) or a positive number of bytes")
        return size
    if m.name == "segment.bytes":
        size = _long(m.name, value)
        if not 14 <= size <= _INT32_MAX:  # Kafka's range for segment.bytes
            raise ConfigError(f"Invalid value {size} for configuration segment.bytes: "
                              "Value must be at least 14")
        return size
    if m.name == "compression.type":
        codec = value.strip()  # Kafka trims, and compares case-sensitively
        if codec not in CODECS:
            raise ConfigError(f"Invalid value {value} for configuration compression.type: "
                              "String must be one of: " + ", ".join(CODECS))
        return None if codec == "producer" else codec
    if m.name == "max.message.bytes":
        size = _long(m.name, value)
        if not 0 <= size <= _INT32_MAX:  # Kafka's range for max.message.bytes
            raise ConfigError(f"Invalid value {size} for configuration max.message.bytes: "
                              "Value must be at least 0")
        return size
    policy = ",".join(p.strip() for p in value.split(",")) if value.strip() else ""
    if policy not in CLEANUP_POLICIES:
        raise ConfigError(f"Invalid value {value} for configuration cleanup.policy: "
                          "expected delete, compact, compact,delete or nothing")
    return policy


def to_arguments(configs: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """CreateTopics configs -> stream arguments; raises ConfigError. A null value is
    Kafka's "use the default" (no argument)."""
    out: dict[str, Any] = {}
    for name, value in configs:
        m = MAPPED.get(name)
        stored = stored_configs.STORED.get(name)
        if stored is not None:
            if value is not None:
                try:
                    out[stored.argument] = stored_configs.parse(name, value)
                except stored_configs.StoredConfigError as exc:
                    raise ConfigError(str(exc)) from None
            continue
        if m is None and name in IGNORED:
            if value is not None:
                _ignored(value)
            continue
        if m is None:
            if name in KAFKA_TOPIC_CONFIGS:
                raise ConfigError(f"Topic config {name} is not supported by smartbroker "
                                  "(supported: " + ", ".join(MAPPED) + ")")
            raise ConfigError(f"Unknown topic config name: {name}")
        if value is None:
            continue
        argument = _argument(m, value)
        if argument is not None:
            out[m.argument] = argument
    return out


_ARGUMENTS = tuple(m.argument for m in MAPPED.values()) + tuple(
    s.argument for s in stored_configs.STORED.values())


def split_declared(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``to_arguments``' output as (what a declare takes, what only overrides may hold)."""
    declared = {k: v for k, v in arguments.items() if k not in OVERRIDE_ONLY}
    return declared, {k: v for k, v in arguments.items() if k in OVERRIDE_ONLY}


def overrides(declared: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """What must lie over the ``declared`` arguments for the mapped ones to be ``wanted``
    (``to_arguments``' output, the topic's whole config set): argument -> value, or None
    to unset one the declaration set."""
    out: dict[str, Any] = {}
    for argument in _ARGUMENTS:
        have, want = declared.get(argument), wanted.get(argument)
        if (None if have is None else _text(have)) != (None if want is None else _text(want)):
            out[argument] = want
    return out


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _described(m: Mapped, value: Any) -> str:
    """A queue argument as the config's value (arguments were validated at declare)."""
    if m.argument in ("x-max-age", "x-delete-retention"):
        seconds = parse_age(value)
        return m.default if seconds is None else str(int(seconds) * 1000)
    return _text(value)


def describe(arguments: Mapping[str, Any], keys: Iterable[str] | None = None,
             max_message_size: int | None = None,
             flush_interval_ms: int | None = None) -> list[Entry]:
    """Every config of a stream (or those of ``keys`` among them, in our order; names we
    do not know are left out, as Kafka leaves out unknown keys). ``max_message_size``
    and ``flush_interval_ms``: the broker's, which an unset max.message.bytes and
    flush.ms describe as."""
    wanted = None if keys is None else set(keys)
    out = []
    for m in MAPPED.values():
        if wanted is not None and m.name not in wanted:
            continue
        if m.argument in arguments:
            out.append(Entry(m.name, _described(m, arguments[m.argument]), False, m.config_type))
        elif m.argument == MAX_MESSAGE_BYTES and max_message_size is not None:
            out.append(Entry(m.name, str(max_message_size), True, m.config_type))
        else:
            out.append(Entry(m.name, m.default, True, m.config_type))
    for spec in stored_configs.STORED.values():
        if wanted is not None and spec.name not in wanted:
            continue
        if spec.argument in arguments:
            out.append(Entry(spec.name, stored_configs.described(arguments[spec.argument]),
                             False, spec.config_type))
        else:
            out.append(Entry(spec.name, stored_configs.default_of(spec, flush_interval_ms),
                             True, spec.config_type))
    out += [Entry(name, value, True, STRING) for name, value in IGNORED.items()
            if wanted is None or name in wanted]
    return out


def message_limit(stream: Any, broker_max: int) -> int:
    """The largest record batch ``stream`` takes: the lower of its max.message.bytes (an
    override AlterConfigs set, else the declared argument) and the broker's limit. Read
    per Produce without building the effective arguments (the produce path is hot)."""
    overrides = stream.meta.overrides
    value = (overrides[MAX_MESSAGE_BYTES] if MAX_MESSAGE_BYTES in overrides
             else stream.arguments.get(MAX_MESSAGE_BYTES))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < broker_max:
        return value
    return broker_max


def target_codec(stream: Any) -> int | None:
    """The codec Produce must store ``stream``'s batches in (compression.type), None for
    ``producer``: as sent. Read per Produce: an empty overrides dict costs one test."""
    overrides = stream.meta.overrides
    return CODECS.get(overrides.get(COMPRESSION) or "producer") if overrides else None
