"""The newest records of one stream partition, kept as delivery-ready AMQP messages.

Why: a reader at (or near) the end of a partition would otherwise read back what was
appended a moment ago: locate it in the sparse index, pread or copy the frame, check its
CRC, decode the stored record and splice the ``x-stream-offset``/``x-stream-partition``
headers in again, once per reader. Profiling showed that per-publish round trip as the
cost of a live stream delivery (a 128 B publish without confirms cost ~12 frame checks and
a pread per delivery). Here the delivery message is built once at publish time and every
reader of that offset shares it.

The tail covers a contiguous run of offsets ``[base, end)`` of AMQP publishes only: an
append made elsewhere (a Kafka batch) breaks the run, and the next publish starts a new
one, so whatever is not here is read from the log as before. It is bounded in bytes and
entries, and kept only while the stream has readers.
"""

from __future__ import annotations

from collections import OrderedDict
from operator import attrgetter

from smartbroker.message import Message
from smartbroker.protocol.codec import FLAG_HEADERS
from smartbroker.queues.stream_records import MAX_TEMPLATES, Splice, splice_cuts

STREAM_BYTES = 16 << 20  # body bytes a stream keeps, split over its partitions
PARTITION_BYTES = 4 << 20  # but at least this per partition
MAX_ENTRIES = 32768
TRIM = 256  # read offsets a one-reader tail drops at a time (Tail.trim)
_body = attrgetter("body")
_new_message = Message.__new__


def partition_budget(partitions: int) -> int:
    """Bytes one partition's tail may hold. Covering a reader's usual lag matters: a
    consumer with prefetch 1000 behind a backlog of 5000 reads ~4000 records back."""
    return max(PARTITION_BYTES, STREAM_BYTES // max(partitions, 1))


class Tail:
    """The publishes at offsets ``base .. base + len(sources) - 1``; ``built[i]`` is the
    delivery message of ``sources[i]``, made when a reader first needs it."""

    __slots__ = ("partition", "base", "sources", "built", "nbytes", "max_bytes", "cuts")

    def __init__(self, partition: int, max_bytes: int = PARTITION_BYTES) -> None:
        self.partition = partition
        self.base = 0
        self.sources: list[Message] = []
        self.built: list[Message | None] = []
        self.nbytes = 0
        self.max_bytes = max_bytes
        self.cuts: dict[bytes, Splice] = {}  # header -> splice_cuts

    @property
    def end(self) -> int:
        return self.base + len(self.sources)

    def add(self, offset: int, msg: Message) -> None:
        """Keep the publish just appended at ``offset`` (a gap starts a new run)."""
        sources = self.sources
        if offset != self.base + len(sources):
            self.clear()
            self.base = offset
        sources.append(msg)
        self.built.append(None)
        self.nbytes += len(msg.body)
        if self.nbytes > self.max_bytes or len(sources) > MAX_ENTRIES:
            self._drop_oldest()

    def get(self, offset: int) -> Message:
        """The delivery message at ``offset`` (``base <= offset < end``)."""
        msg = self.built[offset - self.base]
        return msg if msg is not None else self.run(offset, offset + 1)[0]  # type: ignore[return-value]

    def run(self, start: int, stop: int) -> list[Message | None]:
        """The delivery messages of ``start .. stop - 1`` (within the tail), built in one
        loop where no reader built them yet: a run's splice without two calls per record."""
        base = self.base
        built = self.built
        out = built[start - base:stop - base]
        sources = self.sources
        cuts = self.cuts
        new = _new_message
        last = cut = None  # the header the cut was looked up for (publishers repeat one)
        for k, msg in enumerate(out):
            if msg is not None:
                continue
            i = start - base + k
            src = sources[i]
            header = src.header_payload
            if header is not last:
                last = header
                cut = cuts.get(header)
                if cut is None:
                    if len(cuts) >= MAX_TEMPLATES:
                        cuts.clear()
                    cut = cuts[header] = splice_cuts(header, src.flags, self.partition)
            msg = new(Message)
            msg.route = src.route
            msg.header_payload = cut[0](cut[1], start + k, cut[2])  # type: ignore[index]
            msg.body = src.body
            msg.flags = src.flags | FLAG_HEADERS
            msg._properties = None
            out[k] = built[i] = msg
        return out

    def trim(self, offset: int) -> None:
        """Drop what every reader has read (the offsets below ``offset``), once there are
        ``TRIM`` of them: they are freed while still in the CPU's cache, as a classic
        queue frees an acked message, instead of megabytes later; a reader that goes back
        (a new one, a group's next owner) reads them from the log."""
        n = min(offset - self.base, len(self.sources))
        if n >= TRIM:
            self.nbytes -= sum(map(len, map(_body, self.sources[:n])))
            del self.sources[:n], self.built[:n]
            self.base += n

    def _drop_oldest(self) -> None:
        """Drop the oldest quarter: amortised O(1) per publish, and most of the tail stays."""
        n = len(self.sources) // 4 or 1
        self.nbytes -= sum(map(len, map(_body, self.sources[:n])))
        del self.sources[:n], self.built[:n]
        self.base += n

    def clear(self) -> None:
        if self.sources:
            self.sources.clear()
            self.built.clear()
            self.nbytes = 0


CHUNK = 256  # offsets per chunk of recent reads; chunks are aligned so readers share them
CHUNK_BYTES = 1 << 20  # a chunk stops early past this many bytes (large messages)
MAX_CHUNKS = 16  # per partition, the oldest loaded dropped first


class Chunk:
    """Delivery messages for offsets ``base .. base + len(messages) - 1`` read from the
    log (None where nothing is delivered: a gap, an aborted transaction's record)."""

    __slots__ = ("base", "messages")

    def __init__(self, base: int, messages: list[Message | None]) -> None:
        self.base = base
        self.messages = messages

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def get(self, offset: int) -> Message | None:
        return self.messages[offset - self.base]

    def run(self, start: int, stop: int) -> list[Message | None]:
        """The messages of ``start .. stop - 1`` (within the chunk)."""
        return self.messages[start - self.base:stop - self.base]


class Chunks:
    """One partition's recently read chunks: what one reader decoded, the next reader of
    the same offsets gets without reading the log again."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: OrderedDict[int, Chunk] = OrderedDict()

    def get(self, offset: int) -> Chunk | None:
        """The chunk holding ``offset``: the aligned one, or the one that continues it
        where a chunk of large messages stopped early."""
        chunk = self.chunks.get(offset - offset % CHUNK)
        while chunk is not None and offset >= chunk.end:
            chunk = self.chunks.get(chunk.end)
        return chunk

    def start_for(self, offset: int) -> int:
        """Where a new chunk holding ``offset`` starts: at the aligned offset, or where
        the kept chunks from there end."""
        start = offset - offset % CHUNK
        chunk = self.chunks.get(start)
        while chunk is not None and chunk.end <= offset:
            start = chunk.end
            chunk = self.chunks.get(start)
        return start

    def put(self, base: int, messages: list[Message | None]) -> Chunk:
        chunk = self.chunks[base] = Chunk(base, messages)
        self.chunks.move_to_end(base)
        if len(self.chunks) > MAX_CHUNKS:
            self.chunks.popitem(last=False)
        return chunk

    def clear(self) -> None:
        self.chunks.clear()
