"""Stream queue: Kafka's log behind AMQP. Partitioned, append-only, replayable.

A message goes to the partition of its ``x-message-key`` header (Kafka's murmur2, so the
same as a Kafka client's; streams created before keep their mmh3 rule), else of its routing
key (``partitioner.py``), and gets the next offset there. Consumers are readers with a cursor
per partition; reading never removes anything. Prefetch is credit and an ack only returns
credit (and, in a consumer group, commits). ``basic.get``, nack/reject and purge are
refused as RabbitMQ refuses them. Retention deletes whole closed segments by age or size.
Consumer groups live in ``groups.py``; how readers get their deliveries (credit, the
in-memory tail of recent publishes, shared chunks of older records) in ``stream_delivery.py``;
Kafka Produce's appends in ``stream_appends.py``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar

from smartbroker.message import Message
from smartbroker.protocol.codec import FLAG_PERSISTENT
from smartbroker.queues import (
    kafka_batch,  # registers the store's Kafka batch reader
    producer_state,
    stream_replicated,
)
from smartbroker.queues.base import (
    ACCEPTED,
    Consumer,
    DeadLetter,
    NoHost,
    PublishResult,
    QueueHost,
    QueueSpec,
    Settle,
    Storage,
)
from smartbroker.queues.capabilities import Capabilities, check_arguments, check_consume, refused
from smartbroker.queues.groups import StreamGroups
from smartbroker.queues.offsets import OffsetBook
from smartbroker.queues.partitioner import choose
from smartbroker.queues.retention import Retention
from smartbroker.queues.stream_args import (
    EQUIVALENCE_ARGUMENTS,
    STREAM_ARGUMENTS,
    OffsetSpec,
    StreamSettings,
    check_reader_arguments,
    parse_offset_spec,
    policy_settings,
)
from smartbroker.queues.stream_delivery import Reader, StreamEntry, fill
from smartbroker.queues.stream_partitions import StreamPartitions
from smartbroker.queues.stream_records import (
    PARTITION_OF,
    encode_record,
    message_key,
    record_head,
)
from smartbroker.queues.stream_replicated import RESUME
from smartbroker.queues.stream_storage import StreamMeta, open_log, stream_directory
from smartbroker.queues.stream_tail import Chunks, Tail, partition_budget
from smartbroker.store.commit import WrittenOut


class StreamQueue:
    """A stream is always durable, shared and kept (``declare`` refuses the rest with
    RabbitMQ's 406s), so those three are fixed here, not silently dropped arguments."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        arguments=STREAM_ARGUMENTS, rabbit_type="rabbit_stream_queue",
        supports_get=False, supports_no_ack=False,
        equivalence_arguments=EQUIVALENCE_ARGUMENTS,
        supports_reject=False, supports_purge=False, requires_prefetch=True,
        uses_message_store=False, supports_browse=False, label="stream queues",
        offset_log=True)
    type_name: ClassVar[str] = "stream"
    durable: ClassVar[bool] = True
    auto_delete: ClassVar[bool] = False
    exclusive_owner: ClassVar[None] = None
    uses_store: ClassVar[bool] = False  # its partition logs are its store

    def __init__(self, name: str, vhost: str, *, arguments: Mapping[str, Any] | None = None,
                 host: QueueHost | None = None, settings: StreamSettings | None = None,
                 storage: Storage | None = None, policy: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.vhost = vhost
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.host: QueueHost = host or NoHost()
        self.storage = storage  # None: logs in memory
        self.directory = stream_directory(storage, vhost, name)
        self.meta = StreamMeta.load(self.directory, fsync=storage is not None and storage.fsync != "never")
        self.declared = self.meta.settings(settings or StreamSettings(), self.arguments, name, vhost)
        self.stream = policy_settings(self.declared, policy)  # with the policy applied
        self.policy_name: str | None = None
        self.bindings: set[Any] = set()
        self.consumers: list[Consumer] = []
        self.readers: dict[Consumer, Reader] = {}
        self.deleted = False
        self.last_used = time.monotonic()
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "redeliver": 0, "dead_lettered": 0}
        # before the logs open: a directory with logs but no record is a legacy stream
        self.partitioner = choose(self.directory, fsync=storage is not None and storage.fsync != "never",
                                  unsynced=self.meta.unsynced)
        self._partition_of = PARTITION_OF[self.partitioner]
        self._own_route = kafka_batch.route_for(name)  # the route of records Kafka produced
        self.logs: list[Any] = [self._open_log(f"p{i}") for i in range(self.stream.partitions)]
        self.meta.restore_log_starts(self.logs)  # where DeleteRecords left each partition
        # Kafka producers' state (idempotence, transactions: queues/producer_state.py);
        # None for a stream that never had a producer id: the AMQP-only read path
        self.txns = producer_state.load(self.directory, self.logs, lambda p, o: (
            (f.base, f.batch) for f in self.logs[p].scan_frames(o)))
        # what a publish to each partition returns: a persistent one is confirmed once that
        # log is fsynced, a transient one once the OS has it (store/commit.py WrittenOut)
        self._published: list[PublishResult] = []
        self._written: list[PublishResult] = []
        for lg in self.logs:
            self.add_publish_results(lg)
        budget = partition_budget(len(self.logs))
        self._tails = [Tail(i, budget) for i in range(len(self.logs))]  # live readers' fast path
        self._chunks: defaultdict[int, Chunks] = defaultdict(Chunks)  # recent log reads
        self._dispatch_pending = False
        self.closed = False
        self.offsets = OffsetBook(open_log(self.directory, storage, "offsets", 8 << 20, lazy=True))
        self.created = self.meta.sync_created(storage)  # a new stream's fsyncs, off the loop
        self.groups = StreamGroups(self, self.offsets)
        self.retention = Retention(self)  # the timer that deletes old segments
        self.retention.schedule()
        # called with a partition that grew: Kafka Fetches waiting for data (kafka/fetch.py)
        self.on_append: list[Callable[[int], None]] = []
        # a replicated stream (cluster/replication/stream_replica.py): per partition, the
        # offset readers stop at (its high watermark where this node leads it, else 0:
        # another node serves it); None, as on one node: every record is readable
        self.limits: list[int] | None = None
        self.replication: Any = None  # and its partitions' replicated logs

    @classmethod
    def declare(cls, spec: QueueSpec, host: QueueHost, storage: Storage | None = None) -> StreamQueue:
        """queue.declare of a stream: RabbitMQ's property and argument checks, then the queue."""
        check_arguments(cls.capabilities, spec)
        settings = StreamSettings.parse(spec.name, spec.vhost, spec.durable, spec.exclusive,
                                        spec.auto_delete, spec.arguments)
        return cls(spec.name, spec.vhost, arguments=spec.arguments, host=host,
                   settings=settings, storage=storage, policy=spec.policy)

    def add_publish_results(self, lg: Any) -> None:
        """The cached results a publish to a new partition log returns."""
        on_disk = self.directory is not None
        self._published.append(PublishResult(True, lg) if on_disk else ACCEPTED)
        self._written.append(PublishResult(True, WrittenOut(lg)) if on_disk else ACCEPTED)

    def _open_log(self, name: str, segment_bytes: int | None = None) -> Any:
        return open_log(self.directory, self.storage, name, segment_bytes or self.stream.segment_bytes,
                        partition=True, overrides=self.meta.overrides)

    # -- counts ----------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return 0  # RabbitMQ reports 0 ready messages for streams: nothing is consumed away

    @property
    def total_messages(self) -> int:
        return sum(lg.next_offset - lg.first_offset for lg in self.logs)

    @property
    def message_bytes(self) -> int:
        return sum(lg.size_bytes for lg in self.logs)

    message_bytes_ready = 0  # nothing waits to be consumed away from a log
    dead_letter_target = None  # a log drops nothing it would dead-letter

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def unacked_count(self) -> int:
        return sum(c.unacked for c in self.consumers)

    @property
    def exclusive_consumer(self) -> bool:
        return False

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def apply_policy(self, name: str | None, definition: Mapping[str, Any] | None) -> None:
        """What RabbitMQ applies to streams: max-age, max-length-bytes and
        stream-max-segment-size-bytes (new segments); other keys do not concern a log."""
        self.policy_name = name
        self.stream = policy_settings(self.declared, definition)
        for lg in self.logs:
            lg.segment_bytes = self.stream.segment_bytes
        if not self.retention.scheduled:
            self.retention.schedule()

    # -- publish ---------------------------------------------------------------------------
    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        """Append to the key's partition; the result names that log for confirms."""
        logs = self.logs
        index = self._partition_of(message, len(logs)) if len(logs) > 1 else 0
        compact = self.stream.compact
        key = message_key(message).encode("utf-8", "surrogateescape") if compact else None
        if compact:  # compaction keeps or drops single records
            offset = logs[index].append(encode_record(message), int(time.time() * 1000), key)
        else:  # framed with this loop pass's other publishes (store/log.py)
            offset = logs[index].append_grouped(message.body, None, record_head(message))
        self.stats["publish"] += 1
        if self.on_append:  # the one check the hot path pays for waiting Kafka Fetches
            self.appended(index)
        if self.readers:
            if not compact:  # compaction may drop a record from the log, never from a tail
                self._tails[index].add(offset, message)
            else:  # what the tail or the chunks held may be compacted away from now on
                self._tails[index].clear()
                self._chunks.clear()
            if not self._dispatch_pending:  # once per loop pass: no call for the rest
                self.dispatch()
        if message.flags & FLAG_PERSISTENT:
            return self._published[index]
        return self._written[index]

    # -- the front ends' read interface (Kafka's appends: stream_appends.py) -------------
    @cached_property
    def partitions(self) -> StreamPartitions:
        """The partitions as front ends read them (``stream_partitions.py``), not the
        store logs, which append, delete segments and move the start."""
        return StreamPartitions(self)

    def appended(self, partition: int) -> None:
        """Tell the waiting readers (``on_append``) that ``partition`` grew; whoever appends
        outside ``publish`` (Kafka Produce) calls this too."""
        for callback in list(self.on_append):
            callback(partition)

    # -- consumers -------------------------------------------------------------------------
    def validate_consumer(self, arguments: Mapping[str, Any], no_ack: bool, prefetch: int) -> None:
        """Refuse what RabbitMQ refuses (prefetch is credit), plus our group arguments."""
        group = arguments.get("x-consumer-group")
        check_consume(self, no_ack, prefetch, grouped=group is not None)
        check_reader_arguments(arguments, self.name, len(self.logs))
        if group is not None:
            self.groups.validate_join(group, arguments)

    def add_consumer(self, consumer: Consumer) -> None:
        args = consumer.arguments
        reader = Reader(consumer, parse_offset_spec(args.get("x-stream-offset")))
        self.readers[consumer] = reader
        self.consumers.append(consumer)
        self.last_used = time.monotonic()
        group_name = args.get("x-consumer-group")
        if group_name is not None:
            group_name = group_name.decode() if isinstance(group_name, bytes) else str(group_name)
            self.groups.join(group_name, reader, args)
        else:
            only = args.get("x-stream-partition")
            partitions = [only] if only is not None else range(len(self.logs))
            for p in partitions:
                reader.cursors[p] = self.start_offset(p, reader.start)
            if RESUME in args:  # relayed for a consumer carrying on (a replicated stream)
                stream_replicated.resume(reader, args[RESUME])
        self.dispatch_now()

    def remove_consumer(self, consumer: Consumer) -> None:
        reader = self.readers.pop(consumer, None)
        if reader is None:
            return
        self.consumers.remove(consumer)
        self.groups.leave(reader)
        if not self.readers:
            for tail in self._tails:
                tail.clear()
            self._chunks.clear()
        self.dispatch()

    def start_offset(self, partition: int, spec: OffsetSpec) -> int:
        lg = self.logs[partition]
        if spec.kind == "first":
            return lg.first_offset
        if spec.kind == "last":
            return max(lg.next_offset - 1, lg.first_offset)
        if spec.kind == "offset":
            return max(spec.value, lg.first_offset)
        if spec.kind == "timestamp":
            return lg.offset_for_timestamp(spec.value)
        return lg.next_offset  # next

    # -- delivery --------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Deliver what readers have credit for, once per event-loop pass: a burst of
        publishes or single acks read from one socket becomes one batched read per reader
        instead of one-record reads (the profile's cost). Without a running loop (unit
        tests driving a queue by hand) at once."""
        if self._dispatch_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.dispatch_now()
            return
        self._dispatch_pending = True
        loop.call_soon(self.dispatch_now)

    def dispatch_now(self) -> None:
        self._dispatch_pending = False
        if self.deleted or self.closed:
            return
        for reader in list(self.readers.values()):
            fill(self, reader)

    def delivery_message(self, entry: Any, on_get: bool = False) -> Message:
        return entry.message

    # -- settlement: an ack returns credit; in a group it commits -------------------------
    def ack(self, entry: StreamEntry) -> None:
        self.stats["ack"] += 1
        member = entry.reader.member
        if member is not None:
            member.group.acked(entry.reader, entry.partition, entry.offset)

    def settle(self, op: Settle, entries: list[Any]) -> list[DeadLetter]:
        """Ack returns credit, discard is refused, and requeue (nack, a channel closed with
        deliveries outstanding) sends nothing back: a log is replayed by offset, and a group
        redelivers uncommitted offsets to the partition's next owner. A log never
        dead-letters, so there is never an action."""
        if op is Settle.DISCARD:
            raise refused(self, "reject")
        if op is Settle.ACK:
            for entry in entries:
                self.ack(entry)
        elif self.consumers:
            self.dispatch()
        return []

    def get(self, no_ack: bool = False) -> None:
        raise refused(self, "get")

    def purge(self) -> int:
        raise refused(self, "purge")

    def wake(self, consumer: Consumer) -> None:
        """Streams never park a consumer: its channel dispatches when credit is back."""

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """One retention pass now (``queues/retention.py``); how many segments went."""
        return self.retention.enforce(now_ms)

    # -- lifecycle ---------------------------------------------------------------------------
    def delete(self) -> int:
        self.deleted = True
        self.retention.cancel()
        consumers, self.consumers = self.consumers, []
        self.readers.clear()
        for consumer in consumers:
            consumer.cancelled_by_broker()
        for lg in [*self.logs, self.offsets.log]:
            lg.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        return 0

    def close(self) -> None:
        """Broker shutdown: flush and close the logs (data stays), and snapshot the Kafka
        producer state so the next load scans nothing."""
        self.closed = True  # a dispatch already scheduled must not read closed logs
        self.retention.cancel()  # nor a retention or compaction pass start over them
        if self.txns is not None and not self.deleted:
            try:
                producer_state.save(self.directory, self.txns,
                                    [lg.next_offset for lg in self.logs])
            except OSError as exc:  # the next load rebuilds from the older snapshot
                logging.getLogger(__name__).warning("producer state of %r not saved: %s",
                                                    self.name, exc)
        for lg in [*self.logs, self.offsets.log]:
            lg.close()
