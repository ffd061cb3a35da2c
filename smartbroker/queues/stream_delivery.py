"""How a stream's readers get their deliveries: credit, cursors, and where a record comes
from (the in-memory tail, a chunk of recent reads, or the log).

Readers of one stream mostly read the same offsets at about the same time, so a record is
decoded once into its delivery message and shared: the newest publishes from the tail
(``stream_tail.Tail``), older records from aligned chunks of ``CHUNK`` offsets read from
the log (``stream_tail.Chunks``), which are also each reader's read-ahead when single acks
return credit one at a time. Compacted streams, and cursors below the log start, read the
log directly as before: compaction may drop records a chunk would still hold.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Protocol

from smartbroker.message import Message
from smartbroker.queues.base import Consumer
from smartbroker.queues.stream_args import OffsetSpec
from smartbroker.queues.stream_records import decode_record
from smartbroker.queues.stream_tail import CHUNK, CHUNK_BYTES, TRIM

if TYPE_CHECKING:
    from smartbroker.queues.groups import GroupMember
    from smartbroker.queues.stream import StreamQueue

READ_BATCH = 128  # offsets one reader takes from one partition before the next partition
TRIM_READERS = 16  # past this many readers the tail keeps its byte bound only (no min cursor)


class StreamEntry:
    """One delivery from a stream: what the channel tracks until it is acked."""

    __slots__ = ("message", "partition", "offset", "redelivered", "reader")
    delivery_count = 1  # a log never redelivers an entry: a replay is a new one
    store_id = None  # a log is its own store

    def __init__(self, message: Message, partition: int, offset: int, redelivered: bool,
                 reader: Reader) -> None:
        self.message = message
        self.partition = partition
        self.offset = offset
        self.redelivered = redelivered
        self.reader = reader


class Reader:
    """A consumer's cursors: partition -> next offset to read."""

    __slots__ = ("consumer", "cursors", "member", "_rr", "start")

    def __init__(self, consumer: Consumer, start: OffsetSpec) -> None:
        self.consumer = consumer
        self.cursors: dict[int, int] = {}
        self.member: GroupMember | None = None
        self._rr = 0
        self.start = start


class Run(Protocol):
    """Delivery messages for offsets ``[base, end)`` (None: nothing to deliver there)."""

    base: int

    @property
    def end(self) -> int: ...

    def get(self, offset: int) -> Message | None: ...

    def run(self, start: int, stop: int) -> list[Message | None]:
        """``get`` of ``start .. stop - 1`` (``stop <= end``) in one call."""


def fill(stream: StreamQueue, reader: Reader) -> None:
    """Deliver to ``reader`` while it has credit, taking turns over its partitions."""
    consumer = reader.consumer
    if not reader.cursors or not consumer.can_take():
        return
    partitions = list(reader.cursors)
    idle = 0
    while idle < len(partitions) and consumer.can_take():
        p = partitions[reader._rr % len(partitions)]
        reader._rr += 1
        if p not in reader.cursors:  # revoked meanwhile
            idle += 1
            continue
        if read_partition(stream, reader, p):
            idle = 0
        else:
            idle += 1


def read_partition(stream: StreamQueue, reader: Reader, p: int) -> bool:
    """Up to ``READ_BATCH`` offsets of partition ``p`` for ``reader``; whether it moved."""
    cursor = reader.cursors[p]
    lg = stream.logs[p]
    txns = stream.txns  # committed data only: up to the last stable offset
    end = lg.next_offset if txns is None else txns[p].lso(lg.next_offset)
    limits = stream.limits  # replicated: up to the high watermark
    if limits is not None and limits[p] < end:
        end = limits[p]
    if cursor >= end:
        return False
    if stream.stream.compact or cursor < lg.first_offset:
        return _read_log(stream, reader, p, cursor, end)
    tail = stream._tails[p]  # AMQP publishes: never aborted, so only ``end`` bounds them
    if tail.base <= cursor < tail.end:
        moved = _deliver_run(stream, reader, p, tail, cursor, end)
        now = reader.cursors.get(p, cursor)
        if now - tail.base >= TRIM and len(stream.readers) <= TRIM_READERS:
            # what every reader of the partition has read goes (Tail.trim)
            tail.trim(min(r.cursors.get(p, now) for r in stream.readers.values()))
        return moved
    chunk = stream._chunks[p].get(cursor) or _load_chunk(stream, p, cursor, end)
    return _deliver_run(stream, reader, p, chunk, cursor, end)


def _deliver_run(stream: StreamQueue, reader: Reader, p: int, run: Run, cursor: int,
                 end: int) -> bool:
    consumer = reader.consumer
    member = reader.member
    stop = min(run.end, end, cursor + READ_BATCH)
    credit = getattr(consumer, "credit_left", None)  # test fakes may lack them
    deliver_run = getattr(consumer, "deliver_run", None)
    if member is None and credit is not None and deliver_run is not None:
        # the common case: no per-record checks, and the run delivered in one call
        stop = min(stop, cursor + credit())
        if stop <= cursor:
            return False
        entries = [StreamEntry(msg, p, offset, False, reader)
                   for offset, msg in zip(range(cursor, stop), run.run(cursor, stop), strict=True)
                   if msg is not None]
        reader.cursors[p] = stop
        if entries:
            deliver_run(stream, entries)
            stream.stats["deliver"] += len(entries)
        return True
    offset = cursor
    sent = 0
    while offset < stop and consumer.can_take() and p in reader.cursors:
        msg = run.get(offset)
        reader.cursors[p] = offset + 1
        if msg is not None:
            redelivered = member.group.was_delivered(p, offset) if member else False
            entry = StreamEntry(msg, p, offset, redelivered, reader)
            if member is not None:
                member.group.delivered(p, offset, consumer.no_ack)
            consumer.deliver(stream, entry)
            sent += 1
        offset += 1
    stream.stats["deliver"] += sent
    return offset > cursor


def _load_chunk(stream: StreamQueue, p: int, cursor: int, end: int) -> Run:
    """Read and decode the chunk holding ``cursor`` (up to ``end``) from the log, and keep
    it for the other readers. It covers up to ``CHUNK`` offsets, fewer if its messages
    pass ``CHUNK_BYTES`` (it then ends after ``cursor``'s record and the next chunk
    continues it)."""
    lg = stream.logs[p]
    txns = stream.txns
    chunks = stream._chunks[p]
    start = chunks.start_for(cursor)
    first = max(start, lg.first_offset)
    stop = min(start + CHUNK, end)
    messages: list[Message | None] = [None] * (first - start)
    own_route = stream._own_route
    size = 0
    for rec in lg.scan_records(first):
        offset = rec.offset
        if offset >= stop:
            break
        if offset > start + len(messages):
            messages.extend([None] * (offset - start - len(messages)))  # a gap
        if txns is not None and txns[p].is_aborted(offset):
            messages.append(None)  # an aborted transaction's record
            continue
        messages.append(decode_record(rec.payload, p, offset, own_route))
        size += len(rec.payload)
        if size > CHUNK_BYTES and offset >= cursor:
            return chunks.put(start, messages)
    # every offset below ``stop`` (<= the log's next offset) has been scanned: one with no
    # record now never gets one, so the chunk covers them all and a reader passes over them
    messages.extend([None] * (stop - start - len(messages)))
    return chunks.put(start, messages)


def _read_log(stream: StreamQueue, reader: Reader, p: int, cursor: int, end: int) -> bool:
    """The log read as is: a compacted stream, or a cursor below the log start."""
    lg = stream.logs[p]
    txns = stream.txns
    consumer = reader.consumer
    member = reader.member
    sent = False
    for rec in islice(lg.scan_records(cursor), READ_BATCH):
        if not consumer.can_take() or reader.cursors.get(p) is None or rec.offset >= end:
            break
        if txns is not None and txns[p].is_aborted(rec.offset):  # an aborted transaction's
            reader.cursors[p] = rec.offset + 1
            sent = True  # progress: the caller reads on
            continue
        message = decode_record(rec.payload, p, rec.offset, stream._own_route)
        redelivered = member.group.was_delivered(p, rec.offset) if member else False
        reader.cursors[p] = rec.offset + 1
        entry = StreamEntry(message, p, rec.offset, redelivered, reader)
        stream.stats["deliver"] += 1
        if member is not None:
            member.group.delivered(p, rec.offset, consumer.no_ack)
        consumer.deliver(stream, entry)
        sent = True
    return sent
