"""Classic queue: RabbitMQ semantics for ordering, settlement and message lifecycle.

Delivery: consumers are kept sorted by ``x-priority`` (stable by arrival); the highest
priority consumers with credit get messages round-robin, lower ones only when those are
blocked; with single-active-consumer only the first consumer receives. Settlement: ack
forgets, requeue restores the original position with ``redelivered`` set, reject drops or
dead-letters. Lifecycle: TTL (queue and per-message; expired messages leave even when no
consumer reads, by a timer on the earliest expiry), length limits with the three overflow
modes, delivery limit, ``x-expires`` for unused queues.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from smartbroker.message import Message
from smartbroker.queues.arguments import (
    EQUIVALENCE_ARGUMENTS,
    message_ttl_ms,
    validate_queue_arguments,
)
from smartbroker.queues.base import (
    ACCEPTED,
    REFUSED,
    Consumer,
    DeadLetter,
    NoHost,
    PublishResult,
    QueueEntry,
    QueueHost,
    QueueSpec,
    Settle,
    Storage,
)
from smartbroker.queues.capabilities import Capabilities, check_consume
from smartbroker.queues.expiry import MessageExpiry
from smartbroker.queues.limits import over_limit, would_overflow
from smartbroker.queues.paging import PAGE_OUT_AFTER, Pager
from smartbroker.queues.ready import PriorityReady, ReadyList
from smartbroker.queues.rings import ConsumerRings
from smartbroker.queues.settings import QueueSettings
from smartbroker.queues.unused import UnusedExpiry


class ClassicQueue:
    capabilities: ClassVar[Capabilities] = Capabilities(
        equivalence_arguments=EQUIVALENCE_ARGUMENTS)  # any x- argument: unknown ones are kept
    type_name: ClassVar[str] = "classic"

    def __init__(self, name: str, vhost: str, *, durable: bool = False, auto_delete: bool = False,
                 exclusive_owner: object | None = None, arguments: Mapping[str, Any] | None = None,
                 host: QueueHost | None = None, policy: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.auto_delete = auto_delete
        self.exclusive_owner = exclusive_owner
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.host: QueueHost = host or NoHost()
        self.policy_name: str | None = None
        self.uses_store = durable and self.capabilities.uses_message_store
        self.settings = QueueSettings.resolve(self.arguments, policy)
        self._limited = self.settings.has_limits
        # queue positions: only their order within this queue matters (requeue order)
        self._next_position: Callable[[], int] = itertools.count(1).__next__
        self.ready: ReadyList | PriorityReady = (
            PriorityReady(self.settings.max_priority, self._next_position)
            if self.settings.max_priority else ReadyList(self._next_position))
        self._ring = ConsumerRings(self.settings.single_active_consumer)
        self.consumers: list[Consumer] = self._ring.members  # by priority, highest first
        # its channel says credit may be back for a parked consumer (the caller dispatches)
        self.wake: Callable[[Consumer], None] = self._ring.wake
        self.bindings: set[Any] = set()  # maintained by the vhost, for cleanup on delete
        self._unacked = 0
        self._had_consumer = False
        self._actions: list[DeadLetter] | None = None  # collects dead-letters during settle
        self.expiry = MessageExpiry(self.host.call_later, self._expire)
        self.pager = Pager(lambda offset: self.host.store.load(offset))
        self.unused = UnusedExpiry(self, self.host.call_later, lambda: self.host.queue_unused(self))
        self.deleted = False
        self.last_used = time.monotonic()
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "redeliver": 0, "dead_lettered": 0}
        self.unused.schedule()

    @classmethod
    def declare(cls, spec: QueueSpec, host: QueueHost, storage: Storage | None = None) -> ClassicQueue:
        """queue.declare of a classic queue: RabbitMQ's argument checks, then the queue."""
        validate_queue_arguments(spec.name, spec.vhost, spec.arguments)
        return cls(spec.name, spec.vhost, durable=spec.durable, auto_delete=spec.auto_delete,
                   exclusive_owner=spec.owner if spec.exclusive else None,
                   arguments=spec.arguments, host=host, policy=spec.policy)

    # -- counts ----------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return self.ready.count

    @property
    def message_bytes(self) -> int:
        return self.ready.bytes

    message_bytes_ready = message_bytes

    @property
    def dead_letter_target(self) -> tuple[str, str | None] | None:
        dlx = self.settings.dead_letter_exchange
        return None if dlx is None else (dlx, self.settings.dead_letter_routing_key)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def unacked_count(self) -> int:
        return self._unacked

    @property
    def exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)

    def apply_policy(self, name: str | None, definition: Mapping[str, Any] | None) -> None:
        self.policy_name = name
        self.settings = QueueSettings.resolve(self.arguments, definition)
        self._limited = self.settings.has_limits
        self._ring.single_active = self.settings.single_active_consumer
        self.unused.schedule()
        self._enforce_limits()

    def touch(self) -> None:
        """Declared, consumed or polled: the queue counts as used (``x-expires``)."""
        self.last_used = time.monotonic()

    # -- publish ---------------------------------------------------------------------------
    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        """Enqueue; REFUSED by ``reject-publish`` overflow (the publisher is nacked).
        ``store_id``: the message's record in the message store (persistent, durable queue)."""
        settings = self.settings
        limited = self._limited
        if limited and settings.overflow != "drop-head" and self._would_overflow(message):
            if settings.overflow == "reject-publish-dlx" and settings.dead_letter_exchange is not None:
                self.stats["dead_lettered"] += 1
                self.host.dead_letter(self, message, "maxlen")
            return REFUSED
        self.stats["publish"] += 1
        ttl = settings.message_ttl
        if message.flags & 0x0100:  # expiration property present
            per_message = message_ttl_ms(message)
            if per_message is not None:
                ttl = per_message if ttl is None else min(ttl, per_message)
        # Nothing waiting and a consumer with credit: straight to it, past the ready list.
        consumer = self._ring.next() if self.consumers and not self.ready.count else None
        if ttl is None and store_id is None:
            if consumer is not None:
                self._hand_over_new(consumer, QueueEntry(message))
                return ACCEPTED
            self.ready.push_message(message)  # no per-queue state yet: no entry object
        else:
            entry = QueueEntry(message)
            entry.store_id = store_id
            if ttl is not None:
                if ttl == 0:  # deliverable right now, or expired at once
                    self._publish_ttl_zero(entry, consumer)
                    return ACCEPTED
                entry.expires_at = time.monotonic() + ttl / 1000.0
            if consumer is not None:
                self._hand_over_new(consumer, entry)
                return ACCEPTED
            if ttl is not None:
                self.expiry.track(entry)
            self.ready.push(entry)
            if store_id is not None and self.ready.count > PAGE_OUT_AFTER:
                entry.page_out(self.pager.stub(entry.size, entry.priority))
        if self.consumers and self.ready.count > 1:  # else: none of them could take it
            self.dispatch()
        if limited:
            self._enforce_limits()
        return ACCEPTED

    def _hand_over_new(self, consumer: Consumer, entry: QueueEntry) -> None:
        entry.seq = self._next_position()
        self._hand_over(consumer, entry)

    def _publish_ttl_zero(self, entry: QueueEntry, consumer: Consumer | None) -> None:
        if consumer is None:
            self._dead_letter(entry, "expired")
        else:
            self._hand_over_new(consumer, entry)

    def _would_overflow(self, message: Message) -> bool:
        if self._ring.next(peek=True) is not None and not self.ready:
            return False  # it goes straight to a consumer
        return would_overflow(self.settings, self.ready, message)

    def _enforce_limits(self) -> None:
        while over_limit(self.settings, self.ready):
            self._dead_letter(self.ready.pop_oldest(), "maxlen")

    # -- deliver ---------------------------------------------------------------------------
    def dispatch(self) -> None:
        ready = self.ready
        check_expiry = self.expiry
        while ready.count:
            consumer = self._ring.next()
            if consumer is None:
                return
            entry = ready.pop()
            if check_expiry and entry.expires_at is not None and entry.expires_at <= time.monotonic():
                self._dead_letter(entry, "expired")
                continue
            self._hand_over(consumer, entry)

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        entry.delivery_count += 1
        self.stats["deliver"] += 1
        if consumer.no_ack:
            consumer.deliver(self, entry)
            if entry.store_id is not None:
                self._forget(entry)
            return
        self._unacked += 1
        if entry.store_id is not None and entry.delivery_count == 1 and not entry.redelivered:
            self.host.store.delivered(self.vhost, self.name, entry.store_id)
        consumer.deliver(self, entry)

    def delivery_message(self, entry: QueueEntry, on_get: bool = False) -> Message:
        """The message as delivered (``QueueSettings.delivery_message``)."""
        return self.settings.delivery_message(entry.message, entry.delivery_count, on_get)

    def get(self, no_ack: bool = False) -> QueueEntry | None:
        """``basic.get``: without no_ack the entry stays unacked until the channel settles it."""
        self.last_used = time.monotonic()
        ready = self.ready
        while ready.count:
            entry = ready.pop()
            if entry.expires_at is not None and entry.expires_at <= time.monotonic():
                self._dead_letter(entry, "expired")
                continue
            entry.delivery_count += 1
            self.stats["deliver"] += 1
            if no_ack:
                entry.page_in()  # its store record may be reclaimed once forgotten
                self._forget(entry)
            else:
                self._unacked += 1
                if entry.store_id is not None and entry.delivery_count == 1 and not entry.redelivered:
                    self.host.store.delivered(self.vhost, self.name, entry.store_id)
            return entry
        return None

    # -- settlement ------------------------------------------------------------------------
    def ack(self, entry: QueueEntry) -> None:
        self._unacked -= 1
        self.stats["ack"] += 1
        if entry.store_id is not None:
            self._forget(entry)
        if self._ring.waiting_for is not None and self._ring.handed_over():
            self.dispatch()  # single-active-consumer: the successor starts

    def settle(self, op: Settle, entries: list[QueueEntry]) -> list[DeadLetter]:
        """Ack, requeue or discard deliveries; the dead-letters this causes are returned
        for the caller to route, not routed here (see ``Queue``)."""
        if op is Settle.ACK:  # never an action (a multiple basic.ack: no bookkeeping)
            ack = self.ack
            for entry in entries:
                ack(entry)
            return []
        actions: list[DeadLetter] = []
        self._actions = actions
        try:
            if op is not Settle.DISCARD:  # REQUEUE, RETURN
                self._requeue(entries)
            else:
                for entry in entries:
                    self._discard(entry)
        finally:
            self._actions = None
        return actions

    def _discard(self, entry: QueueEntry) -> None:
        self._unacked -= 1
        if self.deleted:
            self._forget(entry)
        else:
            self._dead_letter(entry, "rejected")
        if self._ring.handed_over():
            self.dispatch()

    def _requeue(self, entries: list[QueueEntry]) -> None:
        limit = self.settings.delivery_limit
        now = time.monotonic()
        for entry in entries:
            self._unacked -= 1
            if self.deleted:
                self._forget(entry)
                continue
            if limit is not None and entry.delivery_count > limit:
                self._dead_letter(entry, "delivery_limit")
                continue
            if entry.expires_at is not None and entry.expires_at <= now:
                self._dead_letter(entry, "expired")
                continue
            entry.redelivered = True
            self.stats["redeliver"] += 1
            self.ready.requeue(entry)
            if entry.expires_at is not None:
                self.expiry.track(entry)
        if self._ring.handed_over() or self.consumers:
            self.dispatch()

    def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        """The entry leaves this queue for the DLX (if any): route its copy, then forget it."""
        if self.settings.dead_letter_exchange is not None:
            self.stats["dead_lettered"] += 1
            if self._actions is not None:  # inside ``settle``: the caller routes it
                self._actions.append(DeadLetter(self, entry.message, reason))
            else:
                self.host.dead_letter(self, entry.message, reason)
        self._forget(entry)

    def settle_removed(self, entry: QueueEntry) -> None:
        """An entry taken out by an operator tool (redrive) is gone for good."""
        self._forget(entry)

    def _forget(self, entry: QueueEntry) -> None:
        if entry.store_id is not None:
            self.host.store.forget(self.vhost, self.name, entry.store_id)
            entry.store_id = None

    def restore(self, records: list[Any]) -> None:
        """Recovery: put the store's live entries back, bodies left on disk."""
        for entry in self.pager.restored_entries(records, self.settings.message_ttl):
            if entry.expires_at is not None:
                self.expiry.track(entry)
            self.ready.push(entry)

    def _expire(self, entry: QueueEntry) -> None:
        if not self.deleted:
            self.ready.remove(entry)
            self._dead_letter(entry, "expired")

    # -- consumers -------------------------------------------------------------------------
    def validate_consumer(self, arguments: Mapping[str, Any], no_ack: bool, prefetch: int) -> None:
        check_consume(self, no_ack, prefetch)

    def add_consumer(self, consumer: Consumer) -> None:
        self._had_consumer = True
        self.last_used = time.monotonic()
        self._ring.add(consumer)
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        if not self._ring.remove(consumer):  # single active: it may wait for a hand-over
            return
        self.last_used = time.monotonic()
        if self.consumers:
            self.dispatch()
        elif self.auto_delete and self._had_consumer:
            self.host.queue_unused(self)

    # -- lifecycle -------------------------------------------------------------------------
    def purge(self) -> int:
        entries = self.ready.clear()
        for entry in entries:
            self._forget(entry)
        return len(entries)

    def delete(self) -> int:
        self.deleted = True
        self.unused.cancel()
        self.expiry.stop()
        count = self.purge()
        for consumer in self._ring.clear():
            consumer.cancelled_by_broker()
        return count

    def close(self) -> None:
        """Broker shutdown: nothing to release (the message store is closed by its owner)."""
