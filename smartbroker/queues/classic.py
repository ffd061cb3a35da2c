"""Classic queue: RabbitMQ semantics, in memory (durability arrives with the store).

Delivery: round-robin over consumers with credit; an exclusive consumer locks the queue.
Settlement: ack forgets, requeue puts the entry back at its original position with
``redelivered`` set, reject drops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from smartbroker.message import Message
from smartbroker.queues.base import Capabilities, Consumer, QueueEntry
from smartbroker.queues.ready import ReadyList

CLASSIC_ARGUMENTS = frozenset({
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority",
    "x-single-active-consumer", "x-queue-mode", "x-queue-type", "x-delivery-limit",
    "x-queue-master-locator", "x-queue-version", "x-queue-leader-locator",
})
# Arguments whose value must match on redeclare (RabbitMQ's equivalence check)
EQUIVALENCE_ARGUMENTS = frozenset({
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority",
    "x-single-active-consumer", "x-queue-type", "x-delivery-limit",
})


class ClassicQueue:
    capabilities: ClassVar[Capabilities] = Capabilities(
        arguments=CLASSIC_ARGUMENTS, equivalence_arguments=EQUIVALENCE_ARGUMENTS)
    type_name: ClassVar[str] = "classic"

    def __init__(self, name: str, vhost: str, *, durable: bool = False, auto_delete: bool = False,
                 exclusive_owner: object | None = None, arguments: Mapping[str, Any] | None = None,
                 on_unused: Callable[[ClassicQueue], None] | None = None) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.auto_delete = auto_delete
        self.exclusive_owner = exclusive_owner
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.ready = ReadyList()
        self.consumers: list[Consumer] = []
        self.bindings: set[Any] = set()  # maintained by the vhost, for cleanup on delete
        self._rr = 0
        self._seq = 0
        self._unacked = 0
        self._had_consumer = False
        self._on_unused = on_unused
        self.deleted = False
        self.last_used = time.monotonic()
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "redeliver": 0}

    # -- counts --------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def unacked_count(self) -> int:
        return self._unacked

    @property
    def exclusive_consumer(self) -> bool:
        return bool(self.consumers) and self.consumers[0].exclusive

    def touch(self) -> None:
        """Declared, consumed or polled: the queue counts as used (``x-expires``)."""
        self.last_used = time.monotonic()

    # -- publish and deliver ---------------------------------------------------------------
    def publish(self, message: Message) -> bool:
        self._seq += 1
        self.stats["publish"] += 1
        self.ready.push(QueueEntry(message, self._seq))
        if self.consumers:
            self.dispatch()
        return True

    def dispatch(self) -> None:
        consumers = self.consumers
        ready = self.ready
        while ready and consumers:
            n = len(consumers)
            for _ in range(n):
                consumer = consumers[self._rr % n]
                self._rr += 1
                if consumer.can_take():
                    break
            else:
                return
            self._hand_over(consumer, ready.pop())

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        entry.delivery_count += 1
        self.stats["deliver"] += 1
        if not consumer.no_ack:
            self._unacked += 1
        consumer.deliver(self, entry)

    def get(self) -> QueueEntry | None:
        self.last_used = time.monotonic()
        if not self.ready:
            return None
        entry = self.ready.pop()
        entry.delivery_count += 1
        self.stats["deliver"] += 1
        return entry

    def track_unacked(self) -> None:
        """A ``basic.get`` without no_ack leaves the entry unacked on the channel."""
        self._unacked += 1

    # -- settlement ------------------------------------------------------------------------
    def ack(self, entry: QueueEntry) -> None:
        self._unacked -= 1
        self.stats["ack"] += 1

    def reject(self, entry: QueueEntry) -> None:
        self._unacked -= 1

    def requeue(self, entries: list[QueueEntry]) -> None:
        for entry in entries:
            self._unacked -= 1
            if self.deleted:
                continue
            entry.redelivered = True
            self.stats["redeliver"] += 1
            self.ready.requeue(entry)
        if self.consumers:
            self.dispatch()

    # -- consumers -------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self._had_consumer = True
        self.last_used = time.monotonic()
        self.consumers.append(consumer)
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = time.monotonic()
        if not self.consumers and self.auto_delete and self._had_consumer and self._on_unused:
            self._on_unused(self)

    # -- lifecycle -------------------------------------------------------------------------
    def purge(self) -> int:
        return len(self.ready.clear())

    def delete(self) -> int:
        self.deleted = True
        count = len(self.ready)
        self.ready.clear()
        consumers, self.consumers = self.consumers, []
        for consumer in consumers:
            consumer.cancelled_by_broker()
        return count
