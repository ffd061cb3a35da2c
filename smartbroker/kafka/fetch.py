"""Kafka Fetch (v4-16; from v13 topics are named by the id Metadata gives) on stream
queues, with long-poll that never blocks the loop.

A Fetch reads each requested partition's stored frames from the one holding its fetch
offset (``PartitionLog.frames``, ``queues/stream_partitions.py``), up to its partition max bytes and the request's max
bytes (the first batch of the first partition with data is sent even when larger, as Kafka
does since KIP-74). A batch produced over Kafka is sent as the bytes it was stored as, whole
(from its first record, as Kafka does: clients skip what precedes their offset); records
published over AMQP are encoded into one RecordBatch v2 per run of them (``records.py``).
When less than ``min_bytes`` is readable the answer is a future: it completes when a
requested partition grows (``StreamQueue.on_append``) and enough is readable, or when
``max_wait_ms`` runs out. The listener writes it when it completes; ``KafkaConnection``
keeps the connection's responses in request order meanwhile.

Not kept: fetch sessions (KIP-227). A full fetch (epoch 0 or -1) is answered with session
id 0, so clients stay on full fetches; an incremental one gets FETCH_SESSION_ID_NOT_FOUND,
as from a Kafka broker whose session cache is full. ``read_committed`` (isolation level
1) reads up to the partition's last stable offset and gets the aborted transactions in the
fetched range (producer id, first offset), so the client drops their records; every Fetch
reports the last stable offset (``queues/partition_producers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.authz import topic_allowed
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.records import stored_to_record
from smartbroker.queues.stream_partitions import PartitionLog

_FULL_EPOCHS = (0, -1)  # FetchMetadata.INITIAL_EPOCH and FINAL_EPOCH: not incremental
FETCH_MAX_BYTES = 55 * 1024 * 1024  # Kafka's broker fetch.max.bytes: a client asks for less


@dataclass(slots=True)
class _Wanted:
    """One requested partition and what reading it found."""

    topic: str | None  # None: a v13+ topic id that names no stream
    partition: int
    offset: int
    max_bytes: int
    queue: Any = None  # the stream queue, None for an unknown topic or partition
    topic_id: uuid.UUID | None = None  # v13+: how the request named the topic
    denied: bool = False  # the client may not read it (authz.py)
    committed: bool = False  # read_committed: up to the last stable offset


class Fetcher:
    """Fetch for the listener's handlers: reads stream partitions of the Kafka vhost."""

    def __init__(self, broker: Broker, vhost: str,
                 topic_id: Callable[[str], uuid.UUID]) -> None:
        self.broker = broker
        self.vhost = vhost
        self.topic_id = topic_id  # the id Metadata gives a topic (handlers.py)
        self._names: dict[uuid.UUID, str] = {}  # topic id -> name, rebuilt on a miss
        self._fresh = False  # _names was rebuilt during the request being read
        # cluster mode: whether another node leads a topic (handlers.attach_peers), asked
        # only for a partition that is not read here: NOT_LEADER_OR_FOLLOWER
        self.led_elsewhere: Callable[[str], bool] | None = None
        # and whether another node leads one partition of a topic held here (spread)
        self.partition_elsewhere: Callable[[str, int], bool] | None = None
        # and the name of a topic id another node leads (v13+ names topics by id)
        self.remote_name: Callable[[uuid.UUID], str | None] | None = None

    def fetch(self, request: Request, session: Any) -> Any:
        """The response body, or a future of it when the request waits for data."""
        body = request.body
        cls = codec.response_class(codec.FETCH)
        version = request.api_version
        if version >= 7 and body.session_epoch not in _FULL_EPOCHS:
            return cls(version=version, throttle_time_ms=0,
                       error_code=ErrorCode.FETCH_SESSION_ID_NOT_FOUND, session_id=0,
                       responses=[])
        wanted = self._wanted(body.topics, version >= 13)
        if body.isolation_level == 1:  # read_committed
            for w in wanted:
                w.committed = True
        response, readable, failed = self._read(cls, version, wanted,
                                                min(body.max_bytes, FETCH_MAX_BYTES))
        if (failed or readable >= body.min_bytes or body.max_wait_ms <= 0 or not wanted):
            return response
        return _Waiting(self, cls, version, wanted, body).future

    def _wanted(self, topics: Any, by_id: bool) -> list[_Wanted]:
        vhost = self.broker.vhosts.get(self.vhost)
        queues = vhost.queues if vhost is not None else {}
        out = []
        self._fresh = False  # the id map is rebuilt once per request at most
        for topic in topics:
            if by_id:
                topic_id: uuid.UUID | None = topic.topic_id
                name = self._name_of(topic.topic_id, queues)
                if name is None and self.remote_name is not None:
                    name = self.remote_name(topic.topic_id)  # answered NOT_LEADER_OR_FOLLOWER
            else:
                topic_id, name = None, topic.topic
            queue = queues.get(name) if name is not None else None
            if queue is not None and not queue.capabilities.offset_log:
                queue = None  # a classic queue is not a topic
            denied = queue is not None and not topic_allowed(self.broker, self.vhost, "read", name)
            elsewhere = self.partition_elsewhere if queue is not None else None
            for part in topic.partitions:
                found = queue if queue is not None and queue.partitions.has(part.partition) else None
                if elsewhere is not None and found is not None and elsewhere(name, part.partition):
                    found = None  # NOT_LEADER_OR_FOLLOWER (_missing)
                out.append(_Wanted(name, part.partition, part.fetch_offset,
                                   part.partition_max_bytes, None if denied else found,
                                   topic_id, denied))
        return out

    def _missing(self, name: str, partition: int = -1) -> ErrorCode:
        """Why a named partition is not read here: another node leads it, or it is unknown."""
        elsewhere, spread = self.led_elsewhere, self.partition_elsewhere
        return (ErrorCode.NOT_LEADER_OR_FOLLOWER if elsewhere is not None and elsewhere(name)
                or spread is not None and spread(name, partition)
                else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)

    def _name_of(self, topic_id: uuid.UUID, queues: Any) -> str | None:
        """The stream a v13+ Fetch names by id (the cache is rebuilt when an id is new)."""
        name = self._names.get(topic_id)
        if (name is None or name not in queues or self.topic_id(name) != topic_id) \
                and not self._fresh:  # 10k unknown ids: not 10k rebuilds
            self._fresh = True
            self._names = {self.topic_id(n): n for n, q in list(queues.items())
                           if q.capabilities.offset_log}
            name = self._names.get(topic_id)
        return name

    def _read(self, cls: Any, version: int, wanted: list[_Wanted],
              max_bytes: int) -> tuple[Any, int, bool]:
        """(response, record bytes in it, whether a partition failed)."""
        pdata = cls.FetchableTopicResponse.PartitionData
        topics: list[Any] = []
        by_topic: dict[tuple[str | None, uuid.UUID | None], list[Any]] = {}
        total = 0
        failed = False
        for w in wanted:
            parts = by_topic.get((w.topic, w.topic_id))
            if parts is None:
                parts = by_topic[w.topic, w.topic_id] = []
                topics.append(cls.FetchableTopicResponse(topic=w.topic, topic_id=w.topic_id,
                                                         partitions=parts))
            queue = w.queue
            if queue is None or queue.deleted:
                parts.append(self._error(pdata, w, ErrorCode.TOPIC_AUTHORIZATION_FAILED if w.denied
                                         else ErrorCode.UNKNOWN_TOPIC_ID if w.topic is None
                                         else self._missing(w.topic, w.partition)))
                failed = True
                continue
            log = queue.partitions[w.partition]
            first, high = log.bounds()
            if not first <= w.offset <= high:
                parts.append(self._error(pdata, w, ErrorCode.OFFSET_OUT_OF_RANGE))
                failed = True
                continue
            records = b""
            txns = queue.txns  # transactions (queues/producer_state.py), None if never
            stable = high if txns is None else txns[w.partition].lso(high)
            end = stable if w.committed else high
            if w.offset < end:
                # what a consumer is served is handed to the OS first: it survives a crash
                # (kill -9) as Kafka's page cache does, so no offset it saw is reused
                log.write_out()
                limit = min(w.max_bytes, max_bytes - total)
                skip = txns[w.partition].is_aborted if txns is not None and w.committed else None
                records = self._batch(log, w, limit, min_one=total == 0, end=end, skip=skip)
                total += len(records)
            aborted = [] if txns is None or not w.committed or not records else [
                pdata.AbortedTransaction(producer_id=pid, first_offset=offset)
                for pid, offset in txns[w.partition].aborted_between(w.offset, end)]
            parts.append(pdata(partition_index=w.partition, error_code=ErrorCode.NONE,
                               high_watermark=high, last_stable_offset=stable,
                               log_start_offset=first, aborted_transactions=aborted,
                               preferred_read_replica=-1, records=records))
        response = cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                       session_id=0, responses=topics)
        return response, total, failed

    def _batch(self, log: PartitionLog, w: _Wanted, limit: int, min_one: bool, end: int,
               skip: Callable[[int], bool] | None = None) -> bytes:
        """The partition's batches from the fetch offset, at most ``limit`` bytes unless
        ``min_one`` lets the first go over: stored Kafka batches as they are, AMQP
        records encoded (each run of them one batch)."""
        parts: list[bytes] = []
        size = 0  # bytes in ``parts``
        run: list[tuple[int, int, bytes | None, bytes | None, Any]] = []
        run_size = codec.BATCH_OVERHEAD  # an upper bound of ``run`` encoded
        record_size = codec.record_size
        full = False
        for frame in log.frames(w.offset):
            if frame.base >= end:  # the last stable offset (read_committed)
                break
            batch = frame.batch
            if batch is not None:
                if run:
                    encoded = codec.write_batch_at(run)
                    parts.append(encoded)
                    size += len(encoded)
                    run, run_size = [], codec.BATCH_OVERHEAD
                if size + len(batch) > limit and (parts or not min_one):
                    break
                parts.append(batch)
                size += len(batch)
                if size >= limit:
                    break
                continue
            for rec in frame.records:
                if rec.offset < w.offset:
                    continue
                if rec.offset >= end:
                    full = True
                    break
                if skip is not None and skip(rec.offset):
                    continue  # an aborted transaction's record stored per record (compacted
                    # topics): re-encoded without its producer id, so dropped here
                # the mapping of kafka/records.py, straight from the stored bytes (no Message)
                timestamp, key, value, headers = stored_to_record(rec.payload, rec.timestamp_ms)
                grown = run_size + record_size(key, value, headers)
                if size + grown > limit and (parts or run or not min_one):
                    full = True
                    break
                run.append((rec.offset, timestamp, key, value, headers))
                run_size = grown
                if size + grown >= limit:
                    full = True
                    break
            if full:
                break
        if run:
            parts.append(codec.write_batch_at(run))
        return b"".join(parts) if len(parts) != 1 else parts[0]

    @staticmethod
    def _error(pdata: Any, w: _Wanted, code: ErrorCode) -> Any:
        """A failed partition, as Kafka's ReplicaManager reports it: unknown offsets."""
        return pdata(partition_index=w.partition, error_code=code, high_watermark=-1,
                     last_stable_offset=-1, log_start_offset=-1, aborted_transactions=[],
                     preferred_read_replica=-1, records=b"")


class _Waiting:
    """A Fetch waiting for ``min_bytes`` or ``max_wait_ms``: an asyncio timer and a
    callback on each requested stream; nothing runs on the loop while nothing changes."""

    def __init__(self, fetcher: Fetcher, cls: Any, version: int, wanted: list[_Wanted],
                 body: Any) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.fetcher = fetcher
        self.cls = cls
        self.version = version
        self.wanted = wanted
        self.max_bytes = min(body.max_bytes, FETCH_MAX_BYTES)
        self.min_bytes = body.min_bytes
        self.future: asyncio.Future[Any] = loop.create_future()
        self.checking = False
        self.hooks: list[tuple[Any, Callable[[int], None]]] = []
        partitions: dict[Any, set[int]] = {}
        for w in wanted:
            partitions.setdefault(w.queue, set()).add(w.partition)
        for queue, parts in partitions.items():
            hook = self._hook(parts)
            queue.on_append.append(hook)
            self.hooks.append((queue, hook))
        self.timer = loop.call_later(body.max_wait_ms / 1000, self._finish)
        self.future.add_done_callback(self._cleanup)

    def _hook(self, parts: set[int]) -> Callable[[int], None]:
        def grew(partition: int) -> None:
            # runs inside the publish: only schedule the read, once per loop pass
            if partition in parts and not self.checking:
                self.checking = True
                self.loop.call_soon(self._check)
        return grew

    def _check(self) -> None:
        self.checking = False
        if self.future.done():
            return
        try:
            response, readable, failed = self.fetcher._read(
                self.cls, self.version, self.wanted, self.max_bytes)
        except Exception as exc:  # reported by the listener as a handler failure
            self.future.set_exception(exc)
            return
        if failed or readable >= self.min_bytes:
            self.future.set_result(response)

    def _finish(self) -> None:
        if self.future.done():
            return
        try:
            response, _, _ = self.fetcher._read(self.cls, self.version, self.wanted,
                                                self.max_bytes)
        except Exception as exc:
            self.future.set_exception(exc)
            return
        self.future.set_result(response)

    def _cleanup(self, _future: asyncio.Future[Any]) -> None:
        """Done or cancelled (the connection closed): drop the timer and the hooks."""
        self.timer.cancel()
        for queue, hook in self.hooks:
            with contextlib.suppress(ValueError):
                queue.on_append.remove(hook)
        self.hooks.clear()
