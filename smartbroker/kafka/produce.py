"""Produce: Kafka record batches appended to stream partitions, and topic auto-creation.

Each partition's batches are checked whole before anything is appended, so a partition's
data is stored entirely or not at all (Kafka's rule too). Records go to the partition the
request names (a Kafka client partitions; nothing is re-partitioned here). A batch is
checked by its header and CRC only (``batches.py``) and stored as the bytes it arrived as
(``stream_appends.append_kafka_batches``): no record is decoded, Fetch serves the same bytes,
and AMQP readers decode them. A compacted topic's records are decoded and stored one by one
(``records.py``), since compaction needs each record's key. Acknowledgement:

* ``acks=0``: no response at all (``NO_RESPONSE``; the listener skips the request);
* ``acks=1`` / ``acks=-1``: one node is every replica, so both answer once the append is
  durable under the stream's fsync mode, the same wait an AMQP publisher confirm does
  (``PublishResult.sync``: the partition log's ``sync``), as a future so the loop never
  blocks; in-memory streams answer at once. A topic whose ``min.insync.replicas`` is above
  1 refuses acks=all with NOT_ENOUGH_REPLICAS, as Kafka with one replica in sync.
  A partition copied on several nodes (docs/replication.md, "Streams"): acks=all waits
  for its in-sync replicas (NOT_ENOUGH_REPLICAS before the append when the ISR is below
  min.insync.replicas, NOT_ENOUGH_REPLICAS_AFTER_APPEND when they did not take it in
  time, NOT_LEADER_OR_FOLLOWER when this node stopped leading it), acks=1 for the
  leader's own log only.

Refusals, per partition, with Kafka's codes: a name Kafka forbids is
INVALID_TOPIC_EXCEPTION; an unknown topic (auto-creation off, or the name held by a classic
queue: Metadata does not list it as a topic either, so clients never get this far) and a
partition out of range are UNKNOWN_TOPIC_OR_PARTITION; bad CRC, magic or framing is
CORRUPT_MESSAGE; a batch over ``max_message_size`` is MESSAGE_TOO_LARGE (Kafka's
``max.message.bytes`` limits batches, and what a compressed one inflates to), a
compression id Kafka does not define UNSUPPORTED_COMPRESSION_TYPE. Batches with a producer id
go through ``idempotence.admit`` first (Kafka's producer-state rules: a retry is answered
with its original offset and stored once; sequence, epoch and transaction errors refuse
the partition's data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.errors import AMQPError
from smartbroker.kafka import batches, codec, configs, idempotence, recompress, records
from smartbroker.kafka.authz import topic_allowed
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.stored_configs import insync_shortfall
from smartbroker.kafka.timestamps import append_time, bounds, out_of_range, stamp
from smartbroker.queues import stream_appends, txn_journal
from smartbroker.queues.stream_replicated import NotCommitted

log = logging.getLogger("smartbroker.kafka")
PRODUCE = 0
VERSIONS = (3, 10)
NO_RESPONSE = object()  # acks=0: the listener sends nothing for this request
CREATE_BUDGET, CREATE_WINDOW = 0.25, 0.5  # seconds of topic auto-creation per window
STREAM_ARGUMENTS = {"x-queue-type": "stream"}  # 1 partition unless kafka_num_partitions


class PartitionError(Exception):
    """One partition refused: its Kafka error code and message."""

    def __init__(self, code: ErrorCode, message: str,
                 record_errors: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.record_errors = record_errors or []  # (batch index, message): Kafka's RecordError


class Topics:
    """The Kafka vhost's stream queues by topic name, creating them on first use when
    ``kafka_auto_create_topics`` is on (through ``VirtualHost.declare_queue``, the path
    AMQP's queue.declare takes: persisted, and visible over AMQP and HTTP)."""

    def __init__(self, broker: Broker, vhost: str, valid_name: Callable[[str], bool]) -> None:
        self.broker = broker
        self.vhost = vhost
        self.valid_name = valid_name
        # cluster mode: whether another node leads a topic (handlers.attach_peers); asked
        # only when the topic is not a stream here, never on the produce path
        self.led_elsewhere: Callable[[str], bool] | None = None
        # and whether another node leads one partition of a topic held here (spread)
        self.partition_elsewhere: Callable[[str, int], bool] | None = None
        self._window = self._spent = 0.0  # auto-creation time spent since _window began

    def _may_auto_create(self) -> bool:
        """Creating a stream is synchronous (files, the definition persisted: ~10 ms), so
        at most CREATE_BUDGET seconds of it per CREATE_WINDOW: one request naming 10k new
        topics stalled every client for ~90 s. The rest are LEADER_NOT_AVAILABLE, which
        clients retry, as while Kafka's controller creates a topic."""
        now = time.monotonic()
        if now - self._window >= CREATE_WINDOW:
            self._window, self._spent = now, 0.0
        return self._spent < CREATE_BUDGET

    def local_partition(self, queue: Any, name: str, index: int) -> Any:
        """Partition ``index`` of topic ``name``'s stream ``queue``, served here: raises
        UNKNOWN_TOPIC_OR_PARTITION when it has none, NOT_LEADER_OR_FOLLOWER when another
        node leads it (a spread stream)."""
        part = queue.partitions.get(index)
        if part is None:
            raise PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                 f"topic {name!r} has no partition {index}")
        elsewhere = self.partition_elsewhere
        if elsewhere is not None and elsewhere(name, index):
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                 f"partition {index} of topic {name!r} is led by another node")
        return part

    def stream(self, name: str, *, create: bool, need: str | None = None) -> Any:
        """The stream queue of topic ``name``; raises PartitionError when there is none, or
        when the client may not ``need`` it (authz.py; creating needs ``configure``)."""
        if not self.valid_name(name):
            raise PartitionError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"invalid topic name {name!r}")
        if need is not None and not topic_allowed(self.broker, self.vhost, need, name):
            raise PartitionError(ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                 f"{need} access to topic {name!r} refused")
        vhost = self.broker.vhosts.get(self.vhost)
        queue = None if vhost is None else vhost.queues.get(name)
        if (queue is None or not queue.capabilities.offset_log) \
                and self.led_elsewhere is not None and self.led_elsewhere(name):
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                 f"topic {name!r} is led by another node")
        if queue is None and create and vhost is not None and self.broker.config.kafka_auto_create_topics \
                and topic_allowed(self.broker, self.vhost, "configure", name):
            if not self._may_auto_create():
                raise PartitionError(ErrorCode.LEADER_NOT_AVAILABLE,
                                     f"topic {name!r} is being created, retry")
            start = time.monotonic()
            try:
                count = self.broker.config.kafka_num_partitions  # Kafka's num.partitions
                arguments = STREAM_ARGUMENTS if count == 1 else {**STREAM_ARGUMENTS,
                                                                 "x-partitions": count}
                queue, _ = vhost.declare_queue(name, durable=True, arguments=arguments)
            except AMQPError as exc:  # e.g. a reserved amq.* name
                log.info("Kafka auto-creation of topic %r refused: %s", name, exc)
                queue = None
            else:
                log.info("Kafka topic %r auto-created as a stream in vhost %r", name, self.vhost)
            finally:
                self._spent += time.monotonic() - start
        if queue is None or not queue.capabilities.offset_log:
            raise PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                 f"unknown topic {name!r}" if queue is None
                                 else f"{name!r} is a classic queue, not a topic")
        return queue


ALARM_RECHECK = 0.25  # seconds, the resource monitor's sampling interval


class Created:
    """A new stream's file fsync (``StreamQueue.created``) as ``_durable`` waits for a
    log: an auto-created topic's topic id and partitioner are durable before the ack."""

    __slots__ = ("future",)

    def __init__(self, future: Any) -> None:
        self.future = future

    async def wait_durable(self, _offset: int) -> None:
        await asyncio.wrap_future(self.future)


class Producer:
    """The Produce handler of one listener."""

    def __init__(self, broker: Broker, topics: Topics) -> None:
        self.broker = broker
        self.topics = topics
        # producer id -> (epoch, partitions of its ongoing transaction): the coordinator's
        self.txn_lookup: idempotence.TxnLookup = lambda pid: None
        self.appended = [0, 0]  # record batches, records stored (Prometheus, kafka/stats.py)

    def produce(self, request: Request, session: Any) -> Any:
        """Append now, or, while a memory or disk alarm is on, once it has cleared."""
        if self.broker.alarms:
            return asyncio.ensure_future(self._after_alarms(request, session))
        return self._produce_now(request, session)

    async def _after_alarms(self, request: Request, session: Any) -> Any:
        """As RabbitMQ blocks AMQP publishers under a resource alarm (server/alarms.py),
        a Produce waits until every alarm has cleared: nothing is appended meanwhile, and
        the connection's later requests wait behind it (responses keep request order; the
        listener stops reading once 64 are owed). Polled as often as the resource monitor
        samples, since alarms carry no event."""
        while self.broker.alarms:
            await asyncio.sleep(ALARM_RECHECK)
        result = self._produce_now(request, session)
        return await result if asyncio.isfuture(result) else result

    def _produce_now(self, request: Request, session: Any) -> Any:
        body = request.body
        acks = body.acks
        cls = codec.response_class(PRODUCE)
        topic_cls = cls.TopicProduceResponse
        part_cls = topic_cls.PartitionProduceResponse
        logs: list[tuple[Any, int]] = []  # (log to sync, its last appended offset)
        answers = []
        for topic in body.topic_data:
            parts = []
            for pdata in topic.partition_data:
                try:
                    if acks not in (0, 1, -1):
                        raise PartitionError(ErrorCode.INVALID_REQUIRED_ACKS, f"acks={acks}")
                    queue = self.topics.stream(topic.name, create=True, need="write")
                    base, log_start, sync, stamped = self._append(queue, topic.name, pdata, acks)
                except PartitionError as exc:
                    errors = [part_cls.BatchIndexAndErrorMessage(
                        batch_index=i, batch_index_error_message=m) for i, m in exc.record_errors]
                    parts.append(part_cls(index=pdata.index, error_code=exc.code,
                                          base_offset=-1, log_append_time_ms=-1,
                                          log_start_offset=-1, record_errors=errors,
                                          error_message=str(exc)))
                    continue
                if sync is not None:
                    logs.append(sync)
                created = queue.created  # auto-created: its meta.json etc. durable too
                if created is not None:
                    if created.done():
                        queue.created = None  # durable: later produces skip the check
                    elif acks != 0:
                        logs.append((Created(created), 0))
                parts.append(part_cls(index=pdata.index, error_code=ErrorCode.NONE,
                                      base_offset=base, log_append_time_ms=stamped,
                                      log_start_offset=log_start, record_errors=[],
                                      error_message=None))
            answers.append(topic_cls(name=topic.name, partition_responses=parts))
        if acks == 0:
            return NO_RESPONSE
        response = cls(version=request.api_version, responses=answers, throttle_time_ms=0)
        if not logs:
            return response
        return asyncio.ensure_future(self._durable(response, logs))

    def _append(self, queue: Any, name: str, pdata: Any,
                acks: int) -> tuple[int, int, Any, int]:
        """Check a partition's batches, then append them all; (base offset, log start
        offset, (log, last offset) to sync or None, log append time or -1)."""
        index = pdata.index
        part = self.topics.local_partition(queue, name, index)
        replication = queue.replication  # None unless copied on several nodes
        if acks == -1 and replication is not None:  # the ISR against min.insync.replicas
            short = replication.shortfall(index)
            if short is not None:
                raise PartitionError(ErrorCode.NOT_ENOUGH_REPLICAS, short)
        elif acks == -1 and queue.meta.overrides:  # min.insync.replicas above our one replica
            wanted = insync_shortfall(queue.meta.overrides)
            if wanted is not None:
                raise PartitionError(ErrorCode.NOT_ENOUGH_REPLICAS, "The size of the current "
                                     f"ISR [0] is insufficient to satisfy the min.isr "
                                     f"requirement of {wanted} for partition {name}-{index}")
        limit = configs.message_limit(queue, self.broker.config.max_message_size)
        checked = self._batches(pdata.records, limit)
        stamped = -1  # LogAppendTime (timestamps.py): the time every record gets
        if queue.meta.overrides:  # compression.type, timestamp configs (overrides only)
            stamped = self._topic_configs(queue, checked)
            try:
                checked = recompress.to_topic_codec(queue, checked, limit)
                if stamped >= 0:
                    checked = stamp(checked, stamped)
            except batches.BatchRefused as exc:
                raise PartitionError(exc.code, str(exc)) from None
        entries = (self._entries(name, pdata.records, index, stamped) if queue.stream.compact
                   else None)
        try:
            original = idempotence.admit(queue, name, index, checked, self.txn_lookup)
        except idempotence.Refused as exc:
            raise PartitionError(exc.code, str(exc)) from None
        if original is not None:  # a retry: stored once, answered with its first offset
            return original, part.first_offset, None, -1
        if entries is not None:
            first, result = stream_appends.append_stored(queue, index, entries)
            count = len(entries)
        else:
            first, result = stream_appends.append_kafka_batches(
                queue, index, [(b.data, b.count, b.max_ts) for b in checked])
            count = sum(b.count for b in checked)
        appended = self.appended
        appended[0] += len(checked)
        appended[1] += count
        if entries is not None:  # a transactional batch's journal entry: durable too
            result = txn_journal.journaled(result, queue.txns)
        waited = result.sync
        if acks == 1 and replication is not None:  # the leader's own log, not the replicas
            waited = getattr(waited, "local", waited)
        sync = None if waited is None else (waited, first + count - 1)
        return first, part.first_offset, sync, stamped

    @staticmethod
    def _topic_configs(queue: Any, checked: list[batches.Batch]) -> int:
        """The topic's timestamp bounds checked (timestamps.py): INVALID_TIMESTAMP with
        Kafka's record errors; returns the LogAppendTime to stamp, or -1."""
        limits = bounds(queue.meta.overrides)
        if limits is not None:
            try:
                errors = out_of_range(checked, *limits, int(time.time() * 1000))
            except batches.BatchRefused as exc:
                raise PartitionError(exc.code, str(exc)) from None
            if errors:
                shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')"
                                  for i, m in errors[:3])
                raise PartitionError(ErrorCode.INVALID_TIMESTAMP, "One or more records have "
                                     f"been rejected due to {len(errors)} record errors in "
                                     "total, and only showing the first three errors at "
                                     f"most: [{shown}]", errors)
        return append_time(queue)

    def _batches(self, data: Any, limit: int) -> list[batches.Batch]:
        """The partition's batches, checked by header and CRC only, and by size against
        ``limit`` (the topic's max.message.bytes, at most the broker's)."""
        try:
            checked = batches.split(data)
            batches.check_size(checked, limit)
        except batches.BatchRefused as exc:
            raise PartitionError(exc.code, str(exc)) from None
        return checked

    def _entries(self, name: str, data: Any, index: int = 0,
                 stamped: int = -1) -> list[tuple[bytes, int, bytes | None]]:
        """(stored record, timestamp ms, key) of every record in ``data`` (``stamped``:
        LogAppendTime's for all); a keyless record refuses the batch with INVALID_RECORD
        and its index, as Kafka's LogValidator."""
        if not data:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, "no record batch")
        route = records.route_for(name)
        limit = self.broker.config.max_message_size
        now = int(time.time() * 1000)
        out = []
        keyless: list[tuple[int, str]] = []
        try:
            for batch in codec.read_batches(data):
                for i, rec in enumerate(batch):
                    if rec.key is None:
                        keyless.append((i, "Compacted topic cannot accept message without key "
                                           f"in topic partition {name}-{index}."))
                    value = rec.value
                    if value is not None and len(value) > limit:
                        raise PartitionError(ErrorCode.MESSAGE_TOO_LARGE,
                                             f"record of {len(value)} bytes is over the limit "
                                             f"of {limit} bytes")
                    key = rec.key
                    ts = stamped if stamped >= 0 else rec.timestamp if rec.timestamp >= 0 else now
                    out.append((records.stored_record(route, ts, key, value, list(rec.headers)),
                                ts, key))
        except codec.DecodeError as exc:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
        except records.RecordError as exc:
            raise PartitionError(ErrorCode.INVALID_RECORD, str(exc)) from None
        except PartitionError:
            raise
        except Exception as exc:  # the library's decompression and varint errors
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE,
                                 f"{type(exc).__name__}: {exc}") from None
        if not out:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, "no records")
        if keyless:
            shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in keyless[:3])
            raise PartitionError(ErrorCode.INVALID_RECORD, "One or more records have been "
                                 f"rejected due to {len(keyless)} record errors in total, and "
                                 f"only showing the first three errors at most: [{shown}]",
                                 keyless)
        return out

    @staticmethod
    async def _durable(response: Any, logs: list[tuple[Any, int]]) -> Any:
        """The response once every appended record is durable (a failed fsync is
        KAFKA_STORAGE_ERROR for the partitions that were waiting, as a nack for AMQP)."""
        try:
            await asyncio.gather(*(lg.wait_durable(last) for lg, last in logs))
        except Exception as exc:  # StoreUnavailable: the disk refused; retried later
            log.warning("Kafka produce not durable: %s", exc)
            code = ErrorCode.KAFKA_STORAGE_ERROR
            if isinstance(exc, NotCommitted):  # replicated: leader lost, or too few replicas
                code = (ErrorCode.NOT_LEADER_OR_FOLLOWER if exc.leader_lost
                        else ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)
            for topic in response.responses:
                for part in topic.partition_responses:
                    if part.error_code == ErrorCode.NONE:
                        part.error_code = code
                        part.base_offset = -1
                        part.error_message = str(exc)
        return response
