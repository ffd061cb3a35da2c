"""What every queue type offers the broker, and what a queue needs from a consumer.

A queue never touches a socket: it hands entries to ``Consumer.deliver`` and the channel
behind the consumer encodes and writes them. A unit test can drive a queue with a fake
consumer. Queue types compose their parts (a message store, a dispatcher); they do not
inherit from each other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from smartbroker.message import Message


class PagedOut:
    """Stands in for a message whose body stays in the store: what the ready list needs
    (size, priority) and how to read the message back (by the entry's ``store_id``). One
    stub serves every paged entry of a queue with the same size and priority."""

    __slots__ = ("size", "priority", "loader")

    def __init__(self, size: int, priority: int,
                 loader: Callable[[QueueEntry], Message]) -> None:
        self.size = size
        self.priority = priority
        self.loader = loader


class QueueEntry:
    """One message sitting in (or delivered from) one queue.

    A durable queue may page the message out (``page_out``): the entry then holds a
    ``PagedOut`` stub, and ``message`` reads the message back from the store. Few slots
    on purpose: a queue may hold millions of entries.
    """

    __slots__ = ("_message", "seq", "redelivered", "delivery_count", "expires_at", "ready",
                 "store_id")

    def __init__(self, message: Message, seq: int | None = None,
                 expires_at: float | None = None) -> None:
        self._message: Message | PagedOut = message
        self.seq = seq  # queue position, given when it first leaves the ready list (lazily:
        # an int per waiting message would cost memory); requeue restores this order
        self.redelivered = False
        self.delivery_count = 0
        self.expires_at = expires_at  # monotonic seconds, None = never
        self.ready = False  # in the ready list (not delivered, not removed)
        self.store_id: int | None = None  # position in the durable store, if persisted

    @property
    def message(self) -> Message:
        message = self._message
        if message.__class__ is PagedOut:
            return message.loader(self)  # type: ignore[union-attr]
        return message  # type: ignore[return-value]

    @property
    def size(self) -> int:
        message = self._message
        return message.size if message.__class__ is PagedOut else len(message.body)  # type: ignore[union-attr]

    @property
    def priority(self) -> int:
        return self._message.priority

    @property
    def paged_out(self) -> bool:
        return self._message.__class__ is PagedOut

    def page_out(self, stub: PagedOut) -> None:
        """Drop the in-memory copy; the stub's loader reads it back on demand."""
        self._message = stub

    def page_in(self) -> None:
        """Keep the message in memory again (before its store record may go away)."""
        if self._message.__class__ is PagedOut:
            self._message = self.message

    def __lt__(self, other: QueueEntry) -> bool:  # heap order: original position
        return self.seq < other.seq


class Consumer(Protocol):
    tag: str
    no_ack: bool
    exclusive: bool
    priority: int
    # ChannelConsumer: True while a classic queue has parked it for lack of credit; its
    # channel then calls ``queue.wake(consumer)`` once credit may be back (ConsumerRings)
    parked: bool

    def can_take(self) -> bool:
        """Has credit (prefetch), and its connection is writable."""

    def deliver(self, queue: Queue, entry: QueueEntry) -> None:
        """Send the entry; for ``no_ack`` consumers the queue forgets it after this call."""

    def cancelled_by_broker(self) -> None:
        """The queue is gone: tell the client (``basic.cancel``) and forget the consumer."""


class ConsumerRings:
    """A queue's consumers by ``x-priority`` (highest first, stable by arrival) and, per
    priority level, a round-robin ring of those that may have credit.

    Why rings: a consumer found without credit is *parked* (left out of its ring) until
    its channel calls ``wake`` when an ack, qos, flow or writability gives credit back; a
    publish then never walks blocked consumers (issue 12: 5,000 consumers at prefetch 1
    made every publish O(consumers)). Consumers with a ``parked`` attribute promise that
    wake-up; any other (a test double) is never parked, only rotated to the back.
    """

    __slots__ = ("members", "_ring_of", "rings")

    def __init__(self) -> None:
        self.members: list[Consumer] = []
        self._ring_of: dict[int, deque[Consumer]] = {}
        self.rings: list[deque[Consumer]] = []  # the rings, highest priority first

    def add(self, consumer: Consumer) -> None:
        members = self.members
        index = len(members)
        while index > 0 and members[index - 1].priority < consumer.priority:
            index -= 1
        members.insert(index, consumer)
        ring = self._ring_of.get(consumer.priority)
        if ring is None:
            ring = self._ring_of[consumer.priority] = deque()
            self._reorder()
        if getattr(consumer, "parked", None) is not None:
            consumer.parked = False
        ring.append(consumer)

    def remove(self, consumer: Consumer) -> bool:
        """False if it was not a consumer here."""
        try:
            self.members.remove(consumer)
        except ValueError:
            return False
        priority = consumer.priority
        if getattr(consumer, "parked", False):
            consumer.parked = False  # gone: its channel must not wake it here again
        else:
            self._ring_of[priority].remove(consumer)
        if not any(c.priority == priority for c in self.members):
            del self._ring_of[priority]
            self._reorder()
        return True

    def clear(self) -> list[Consumer]:
        """Forget every consumer (the queue is deleted); returns them."""
        gone = list(self.members)
        self.members.clear()  # the same list object: the queue exposes it as ``consumers``
        self._ring_of.clear()
        self.rings = []
        for consumer in gone:
            if getattr(consumer, "parked", False):
                consumer.parked = False
        return gone

    def _reorder(self) -> None:
        self.rings = [self._ring_of[p] for p in sorted(self._ring_of, reverse=True)]

    def pick(self, peek: bool = False, first_blocked: bool = False) -> Consumer | None:
        """The next consumer with credit, round-robin within the highest level that has
        one; ``peek`` leaves the rotation as it is; ``first_blocked``: the caller already
        found the first consumer of the top ring without credit. Amortised O(1): each
        consumer looked at and found blocked leaves its ring until woken."""
        for ring in self.rings:
            for _ in range(len(ring)):
                consumer = ring[0]
                if first_blocked:
                    first_blocked = False
                elif consumer.can_take():
                    if not peek:
                        ring.rotate(-1)
                    return consumer
                ring.popleft()
                if getattr(consumer, "parked", None) is None:  # cannot be woken: keep asking
                    ring.append(consumer)
                else:
                    consumer.parked = True
        return None

    def wake(self, consumer: Consumer) -> None:
        """Credit may be back for a parked consumer: to the back of its ring."""
        if consumer.parked:
            consumer.parked = False
            self._ring_of[consumer.priority].append(consumer)


@dataclass(frozen=True)
class Capabilities:
    """What a queue type accepts: its ``x-`` arguments and which operations work."""

    arguments: frozenset[str]
    supports_get: bool = True
    supports_no_ack: bool = True
    supports_exclusive: bool = True
    equivalence_arguments: frozenset[str] = field(default_factory=frozenset)
    supports_reject: bool = True  # basic.nack / basic.reject
    supports_purge: bool = True
    requires_prefetch: bool = False  # consumers must have basic.qos credit


class Queue(Protocol):
    """What the broker and channels call on any queue type (``ClassicQueue``,
    ``StreamQueue``). A type refuses what it does not support with RabbitMQ's reply
    (streams: ``get``, ``reject`` and ``purge`` raise 540) and says so in ``capabilities``."""

    capabilities: ClassVar[Capabilities]
    type_name: ClassVar[str]
    name: str
    vhost: str
    durable: bool
    exclusive_owner: object | None
    auto_delete: bool
    arguments: Mapping[str, Any]
    consumers: list[Consumer]

    def publish(self, message: Message, store_id: int | None = None) -> bool:
        """Enqueue (and deliver, if a consumer has credit); False if the queue refused it.
        ``store_id``: the message's record in the shared message store, if persisted."""

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with credit."""

    def get(self, no_ack: bool = False) -> QueueEntry | None: ...

    def delivery_message(self, entry: QueueEntry, on_get: bool = False) -> Message:
        """The message to send (may add headers such as x-delivery-count)."""

    def touch(self) -> None:
        """Declared or used: restarts the ``x-expires`` clock."""

    def apply_policy(self, name: str | None, definition: Mapping[str, Any] | None) -> None: ...

    def ack(self, entry: QueueEntry) -> None: ...

    def requeue(self, entries: list[QueueEntry]) -> None: ...

    def reject(self, entry: QueueEntry) -> None:
        """Settle without requeue (dead-letters with reason ``rejected`` when configured)."""

    def add_consumer(self, consumer: Consumer) -> None: ...

    def remove_consumer(self, consumer: Consumer) -> None: ...

    def purge(self) -> int: ...

    def delete(self) -> int:
        """Cancel consumers, drop messages; return how many were ready."""

    @property
    def message_count(self) -> int: ...

    @property
    def consumer_count(self) -> int: ...

    @property
    def unacked_count(self) -> int: ...
