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

from smartbroker.message import Message
from smartbroker.queues.stream_records import delivery_message

MAX_BYTES = 4 << 20  # body bytes kept per partition before the older half goes
MAX_ENTRIES = 8192


class Tail:
    """Delivery messages for offsets ``base .. base + len(messages) - 1``."""

    __slots__ = ("partition", "base", "messages", "nbytes")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.base = 0
        self.messages: list[Message] = []
        self.nbytes = 0

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def add(self, offset: int, msg: Message) -> None:
        """Keep the publish just appended at ``offset`` (a gap starts a new run)."""
        messages = self.messages
        if offset != self.base + len(messages):
            messages.clear()
            self.base = offset
            self.nbytes = 0
        messages.append(delivery_message(msg.route, msg.header_payload, msg.flags, msg.body,
                                         self.partition, offset))
        self.nbytes += len(msg.body)
        if self.nbytes > MAX_BYTES or len(messages) > MAX_ENTRIES:
            self._drop_older_half()

    def _drop_older_half(self) -> None:
        half = len(self.messages) // 2 or 1
        self.nbytes -= sum(len(m.body) for m in self.messages[:half])
        del self.messages[:half]
        self.base += half

    def clear(self) -> None:
        if self.messages:
            self.messages.clear()
            self.nbytes = 0
