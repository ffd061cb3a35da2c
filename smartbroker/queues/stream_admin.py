"""What Kafka's admin APIs change on a stream after its declaration, beside its logs.

* ``add_partitions`` (CreatePartitions): a stream only grows; the new count is durable in
  ``StreamMeta`` and keyed publishes hash over it from then on, as in Kafka. The declared
  ``x-partitions`` stays what AMQP redeclares are checked against.
* ``set_overrides`` (AlterConfigs): retention, segment size, cleanup policy and the
  partitions' fsync interval (flush.ms) from arguments Kafka set on top of the declared
  ones; the retention timer and the logs read them at once.
* ``delete_records`` (DeleteRecords): moves a partition's log start offset; offsets below it
  are gone for Kafka and AMQP readers alike.

Each change is saved (``meta.json``, fsynced) before it takes effect, so a restart never
sees less than a client was told.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from smartbroker.queues.groups_members import _Progress
from smartbroker.queues.stream_args import StreamSettings, policy_settings
from smartbroker.queues.stream_storage import flush_interval_ms
from smartbroker.queues.stream_tail import Tail, partition_budget
from smartbroker.store.log import SegmentLog

if TYPE_CHECKING:
    from smartbroker.queues.stream import StreamQueue


def add_partitions(stream: StreamQueue, count: int) -> None:
    """Grow ``stream`` to ``count`` partitions (more than it has). Readers of every
    partition read the new ones from their start; live groups rebalance over them."""
    old = len(stream.logs)
    if count <= old:
        raise ValueError(f"stream {stream.name!r} has {old} partitions, cannot go to {count}")
    stream.meta.partitions = count
    stream.meta.save()
    for p in range(old, count):
        lg = stream._open_log(f"p{p}")
        stream.logs.append(lg)
        stream.add_publish_results(lg)
        stream._tails.append(Tail(p, partition_budget(count)))
    stream.declared = dataclasses.replace(stream.declared, partitions=count)
    stream.stream = dataclasses.replace(stream.stream, partitions=count)
    for reader in stream.readers.values():
        if reader.member is None and stream_wide(reader.consumer.arguments):
            for p in range(old, count):
                reader.cursors[p] = stream.logs[p].first_offset
    for group in stream.groups.live.values():
        for p in range(old, count):
            group.progress.setdefault(p, _Progress())
        if group.members:
            group.rebalance()
    stream.dispatch()


def stream_wide(arguments: Mapping[str, Any]) -> bool:
    """Whether a consumer reads every partition (no ``x-stream-partition``)."""
    return arguments.get("x-stream-partition") is None


def check_overrides(stream: StreamQueue, overrides: Mapping[str, Any]) -> StreamSettings:
    """The declared settings as ``overrides`` (replacing the current ones) would make
    them; raises the AMQPError a declaration with those arguments would."""
    meta = dataclasses.replace(stream.meta, overrides=dict(overrides))
    effective = meta.arguments(stream.arguments)
    settings = StreamSettings.parse(stream.name, stream.vhost, True, False, False, effective)
    if meta.partitions > settings.partitions:
        settings = dataclasses.replace(settings, partitions=meta.partitions)
    return settings


def set_overrides(stream: StreamQueue, overrides: Mapping[str, Any],
                  policy: Mapping[str, Any] | None) -> None:
    """Replace the stream's overrides (queue argument -> value, None: unset) and apply them
    with the vhost's ``policy`` on top, as a policy change is applied."""
    settings = check_overrides(stream, overrides)
    stream.meta.overrides = dict(overrides)
    stream.meta.save()
    stream.declared = settings
    stream.stream = policy_settings(settings, policy)
    idle_ms = flush_interval_ms(stream.meta.overrides, stream.storage.stream_flush_interval_ms
                                if stream.storage is not None else 0.0)
    for lg in stream.logs:
        lg.segment_bytes = stream.stream.segment_bytes
        if isinstance(lg, SegmentLog):  # memory logs never fsync
            lg.set_idle_fsync_ms(idle_ms)
    stream.retention.cancel()  # rescheduled with the new settings (or not at all)
    stream.retention.schedule()


def delete_records(stream: StreamQueue, partition: int, offset: int) -> int:
    """Move ``partition``'s log start offset up to ``offset`` (at most its high watermark;
    a lower one changes nothing) and delete the segments wholly below it. Returns the log
    start offset (Kafka's low watermark)."""
    lg = stream.logs[partition]
    if offset > lg.first_offset:
        stream.meta.log_start[partition] = offset
        stream.meta.save()
        lg.set_start(offset)
        for reader in stream.readers.values():
            cursor = reader.cursors.get(partition)
            if cursor is not None and cursor < offset:
                reader.cursors[partition] = offset
    return lg.first_offset
