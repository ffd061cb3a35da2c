"""``x-queue-type: quorum`` on one node, as a client of RabbitMQ 3.10 sees it.

A single node has no replicas, so a quorum queue is a classic queue configured with the
quorum type's rules (rabbit_quorum_queue.erl, rabbit_fifo.erl, checked against 3.10.8):

- declare: the quorum type's own arguments are validated; those of the other types are
  refused by name; no server-named queues; durable, not exclusive, not auto-delete;
- the type's arguments must match on redeclare;
- a message nacked or rejected with requeue goes to the BACK of the queue, where a classic
  queue puts it back at its old place (a closed channel's deliveries come back first);
- ``x-delivery-count`` and ``x-delivery-limit`` (``QueueSettings.quorum``);
- ``x-overflow: reject-publish-dlx`` is served as drop-head; ``reject-publish`` accepts the
  publish that crosses the limit, then refuses until the queue is down to 80 % of it;
- message TTL: an expired message leaves only from the head of the queue (rabbit_fifo's
  expire_msgs), so one behind a live head stays, counted, until it gets there;
- every message is stored, persistent or not (RabbitMQ's Raft log keeps them all);
- single active consumer: the next one starts as soon as the active one is cancelled;
- consumers: no global QoS, no other type's consumer arguments; prefetch 0 means 2000;
- queue.delete refuses if-unused and if-empty;
- ``x-dead-letter-strategy: at-least-once`` with ``x-overflow: reject-publish`` keeps a
  dead-lettered message until its targets confirm it (``quorum_dlx.py``); with any other
  overflow it falls back to at-most-once, as RabbitMQ does (and logs).

On a cluster a quorum queue with more than one member is replicated: its leader's
object keeps its messages in a log of its own (``quorum_replicated.lead``,
``quorum_log.py``; docs/replication.md) instead of the shared store, and its confirms
wait for the replica set's commit; everything above applies unchanged.

Why a subclass and not a wrapper: the vhost, the channels and the queue's own timers must
see ONE object (identity is how the vhost finds and drops a queue), so the classic queue is
configured through its class attributes and ready list; no quorum branch is added to
classic.py's paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from smartbroker.errors import precondition_failed
from smartbroker.message import Message
from smartbroker.queues.arguments import check_replicated_properties
from smartbroker.queues.base import (
    REFUSED,
    Consumer,
    DeadLetter,
    PublishResult,
    QueueEntry,
    QueueHost,
    QueueSpec,
    Settle,
    Storage,
)
from smartbroker.queues.capabilities import Capabilities
from smartbroker.queues.classic import ClassicQueue
from smartbroker.queues.quorum_arguments import (
    OTHER_TYPES_CONSUMER_ARGUMENTS,
    QUORUM_ARGUMENTS,
    RABBIT_TYPE,
    UNLIMITED_PREFETCH,
    check_quorum_arguments,
)
from smartbroker.queues.quorum_dlx import DeadLetterWorker, dead_letter_strategy
from smartbroker.queues.quorum_limits import RejectPublish
from smartbroker.queues.ready import ReadyList
from smartbroker.queues.settings import QueueSettings

if TYPE_CHECKING:
    from smartbroker.queues.quorum_hold import CommitHold
    from smartbroker.queues.quorum_log import QuorumLog

class ReturnsLast(ReadyList):
    """rabbit_fifo (3.10) enqueues a nacked/rejected message again, behind every waiting
    one, in the order of the returns: it rejoins the tail and takes a new position. The
    deliveries of a closed channel come back first, by age, as a classic queue's do
    (``to_front``, set for a ``Settle.RETURN``)."""

    __slots__ = ("to_front",)

    def __init__(self, next_position: Callable[[], int]) -> None:
        super().__init__(next_position)
        self.to_front = False

    def requeue(self, entry: QueueEntry) -> None:
        if self.to_front:
            super().requeue(entry)
            return
        entry.seq = None  # ``pop`` gives it a fresh position
        self.push(entry)


class QuorumQueue(ClassicQueue):
    capabilities: ClassVar[Capabilities] = Capabilities(
        rabbit_type=RABBIT_TYPE, label="quorum queues", equivalence_arguments=QUORUM_ARGUMENTS,
        server_named=False, supports_global_qos=False, delete_conditions=False)
    type_name: ClassVar[str] = "quorum"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._policy: Mapping[str, Any] | None = kwargs.get("policy")  # the settings read it
        super().__init__(*args, **kwargs)
        self.ready: ReturnsLast = ReturnsLast(self._next_position)  # type: ignore[assignment]
        self._stored: PublishResult | None = None  # the answer for a message stored here
        # replicated (``quorum_replicated.lead``): the queue's own log, and the answer for
        # a message stored there (its confirm waits for the replica set's commit)
        self.own_log: QuorumLog | None = None
        self.own_result: PublishResult | None = None
        self.led = False  # it wrote to its own log once (then never a stand-in)
        # replicated: whether this node's leadership still holds (``serves``)
        self.serving: Callable[[], bool] | None = None
        # replicated: enqueues not committed yet, kept out of the ready list (quorum_hold)
        self.hold: CommitHold | None = None
        self.dlx_worker: DeadLetterWorker | None = None  # at-least-once, once needed
        self._overdue: set[QueueEntry] = set()  # expired behind the head: wait for it

    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        """Every message of a quorum queue is kept on disk, as RabbitMQ's Raft log keeps
        them whatever their delivery mode: the vhost stores persistent ones; a transient
        one is stored here, and its confirm waits for the same fsync."""
        limits = self._reject_publish
        if limits is not None and limits.refuses(*self._held()):
            return REFUSED
        result = self._publish(message, store_id)
        if limits is not None and result.accepted:
            limits.published(*self._held())
        return result

    def _held(self) -> tuple[int, int]:
        """What reject-publish limits count: the ready messages and those waiting for
        at-least-once dead-lettering (rabbit_fifo:is_over_limit)."""
        ready, worker, hold = self.ready, self.dlx_worker, self.hold
        count, nbytes = ready.count, ready.bytes
        if hold is not None:
            count, nbytes = count + hold.count, nbytes + hold.bytes
        if worker is None:
            return count, nbytes
        return count + worker.count, nbytes + worker.bytes

    def _publish(self, message: Message, store_id: int | None) -> PublishResult:
        own = self.own_result
        if own is not None:
            return self._publish_own(message, own)
        store = self.host.store
        if store_id is not None or store is None or not self.uses_store:
            return super().publish(message, store_id)
        sid = store.enqueue(self.vhost, (self.name,), message)
        result = super().publish(message, sid)
        if not result.accepted:
            store.forget(self.vhost, self.name, sid)
            return result
        stored = self._stored
        if stored is None or stored.sync is not store.log:
            stored = self._stored = PublishResult(True, store.log)
        return stored

    def _publish_own(self, message: Message, own: PublishResult) -> PublishResult:
        """Replicated: into the queue's own log (``quorum_replicated``)."""
        qlog = self.own_log
        if qlog is None:  # it led and no longer does (quorum_replicated.release)
            return REFUSED
        sid = qlog.enqueue(self.vhost, (self.name,), message)
        hold = self.hold
        if hold is not None:  # into the queue once committed (CommitHold.release)
            hold.add(sid, message)
            return own
        result = super().publish(message, sid)
        if not result.accepted:
            qlog.forget(self.vhost, self.name, sid)
            return result
        return own

    @property
    def message_count(self) -> int:
        """Ready messages, with the enqueues not committed yet: what the queue accepted
        (its publishers' confirms are on their way), as queue.declare-ok and /api/queues
        count them."""
        hold = self.hold
        return self.ready.count if hold is None else self.ready.count + hold.count

    @property
    def message_bytes(self) -> int:
        hold = self.hold
        return self.ready.bytes if hold is None else self.ready.bytes + hold.bytes

    message_bytes_ready = message_bytes

    def purge(self) -> int:
        """The enqueues not committed yet go too: a purge applies after them in the log."""
        count = super().purge()
        hold = self.hold
        if hold is None or not hold.count:
            return count
        store = self.host.store
        offsets = hold.take()
        for offset in offsets:
            store.forget(self.vhost, self.name, offset)
        return count + len(offsets)

    @property
    def settings(self) -> QueueSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: QueueSettings) -> None:
        """rabbit_quorum_queue:overflow/3: ``reject-publish-dlx`` is accepted but served as
        drop-head (RabbitMQ logs a warning); ``reject-publish`` limits are kept out of the
        classic queue's settings and applied by ``RejectPublish`` (quorum_limits.py)."""
        if settings.overflow == "reject-publish-dlx":
            settings = replace(settings, overflow="drop-head")
        self._settings, self._reject_publish = RejectPublish.split(
            settings, getattr(self, "_reject_publish", None))
        self.at_least_once = self._dead_letter_strategy(settings) == "at-least-once"
        worker = getattr(self, "dlx_worker", None)
        if worker is None:
            return
        if self.at_least_once:
            worker.retry()  # RabbitMQ's worker looks the topology up again
        else:  # rabbit_fifo_dlx:switch_from(at_least_once): the held messages are deleted
            self.dlx_worker = None
            for entry in worker.drop(self.vhost):
                self._forget(entry)

    def _dead_letter_strategy(self, settings: QueueSettings) -> str:
        return dead_letter_strategy(self.name, self.vhost, self.arguments,
                                    getattr(self, "_policy", None), settings)

    def apply_policy(self, name: str | None, definition: Mapping[str, Any] | None) -> None:
        self._policy = definition
        super().apply_policy(name, definition)

    def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        """At-least-once: the entry stays stored, held by the worker until every target
        confirmed its copy (``quorum_dlx.py``); else as a classic queue (at-most-once)."""
        if not self.at_least_once or self.deleted or not self.leads_here:
            super()._dead_letter(entry, reason)
            return
        self.stats["dead_lettered"] += 1
        if entry.store_id is not None:
            self.host.store.dead_lettered(self.vhost, self.name, entry.store_id, reason)
        self._worker().discard(entry, reason)

    def _worker(self) -> DeadLetterWorker:
        worker = self.dlx_worker
        if worker is None or worker.closed:  # closed: it stopped leading, and leads again
            worker = self.dlx_worker = DeadLetterWorker(self)
        return worker

    @property
    def leads_here(self) -> bool:
        """False once a replicated queue's leadership moved away (quorum_replicated.release)."""
        return not (self.led and self.own_log is None)

    def release_discarded(self, entry: QueueEntry) -> None:
        """Every dead-letter target confirmed: forgotten, as an ack would."""
        if self.leads_here:
            self._forget(entry)

    @property
    def messages_dlx(self) -> int:
        worker = self.dlx_worker
        return 0 if worker is None else worker.count

    @property
    def message_bytes_dlx(self) -> int:
        worker = self.dlx_worker
        return 0 if worker is None else worker.bytes

    def delete(self) -> int:
        """The held dead letters go with the queue (rabbit_fifo drops its discards)."""
        worker, self.dlx_worker = self.dlx_worker, None
        count = super().delete()
        if worker is not None:
            for entry in worker.close():
                self._forget(entry)
        return count

    @classmethod
    def declare(cls, spec: QueueSpec, host: QueueHost, storage: Storage | None = None) -> QuorumQueue:
        """RabbitMQ's order: the type's argument values, then the other types' arguments by
        name, then the properties (rabbit_quorum_queue:declare)."""
        check_quorum_arguments(spec.name, spec.vhost, spec.arguments)
        check_replicated_properties(spec.name, spec.vhost, spec.durable, spec.exclusive,
                                    spec.auto_delete)
        return cls(spec.name, spec.vhost, durable=spec.durable, auto_delete=spec.auto_delete,
                   arguments=spec.arguments, host=host, policy=spec.policy)

    def _expire(self, entry: QueueEntry) -> None:
        """Its TTL ran out: it goes if it is the head; else it waits for that."""
        if self.deleted:
            return
        if self.ready.peek() is entry:
            super()._expire(entry)
            self._expire_head()
        else:
            self._overdue.add(entry)
            # until it is gone, each dispatch checks the head (an instance attribute:
            # the usual dispatch, the hot path, stays as it is)
            self.dispatch = self._dispatch_then_expire  # type: ignore[method-assign]

    def _expire_head(self) -> None:
        """The head changed: expired messages now at the head leave (rabbit_fifo checks
        after every command)."""
        ready, overdue = self.ready, self._overdue
        now = time.monotonic()
        while True:
            head = ready.peek()
            if head is None or head.expires_at is None or head.expires_at > now:
                break
            overdue.discard(head)
            ready.remove(head)
            self._dead_letter(head, "expired")
        for entry in [e for e in overdue if not e.ready]:  # delivered or removed meanwhile
            overdue.discard(entry)
        if not overdue and "dispatch" in self.__dict__:
            del self.dispatch

    def dispatch(self) -> None:
        if self.led and not self.serves():
            return
        ClassicQueue.dispatch(self)

    def serves(self) -> bool:
        """Whether a replicated queue's object led here may hand out messages now: not
        once it stopped leading (``quorum_replicated.release``: the new leader gives them
        out, flagged), nor once this node's lease has lapsed by its own clock though the
        core has not stepped down yet (``serving``): a node resumed from a pause reads its
        sockets before its lease check runs, and a consumer's ack there handed the next
        ready message, delivered already by the new leader, out again unflagged."""
        if self.own_log is None:
            return False
        serving = self.serving
        return serving is None or serving()

    def get(self, no_ack: bool = False) -> QueueEntry | None:
        if self.led and not self.serves():
            return None
        entry = super().get(no_ack)
        if self._overdue:
            self._expire_head()
        return entry

    def _dispatch_then_expire(self) -> None:
        QuorumQueue.dispatch(self)
        self._expire_head()

    def add_consumer(self, consumer: Consumer) -> None:
        """rabbit_quorum_queue:consume turns prefetch 0 ("no limit") into 2000 for Ra: a
        consumer that acks holds at most that many unacked messages."""
        if not consumer.no_ack and getattr(consumer, "prefetch", None) == 0:
            consumer.prefetch = UNLIMITED_PREFETCH  # type: ignore[attr-defined]
        super().add_consumer(consumer)

    def restore(self, records: list[Any]) -> None:
        """Recovery. RabbitMQ's log keeps each message's delivery count; the store keeps
        only whether it was delivered, so a redelivered one comes back as returned once
        (``x-delivery-count: 1`` on its next delivery: exact for the usual single delivery)."""
        held = [rec for rec in records if getattr(rec, "dead_reason", None) is not None]
        if held:  # at-least-once dead letters go back to the dead-letter stage
            records = [rec for rec in records if getattr(rec, "dead_reason", None) is None]
            worker = self._worker()
            for entry, rec in zip(self.pager.restored_entries(held, None), held, strict=True):
                worker.discard(entry, rec.dead_reason)
        super().restore(records)
        for entry in self.ready:
            if entry.redelivered and not entry.delivery_count:
                entry.delivery_count = 1

    def remove_consumer(self, consumer: Consumer) -> None:
        """Single active consumer: rabbit_fifo activates the next consumer as soon as the
        active one is cancelled, while the old one still holds its unacked messages (a
        classic queue waits until they are settled)."""
        super().remove_consumer(consumer)
        if self._ring.waiting_for is consumer:
            self._ring.waiting_for = None
            if self.consumers:
                self.dispatch()

    def settle(self, op: Settle, entries: list[QueueEntry]) -> list[DeadLetter]:
        if self._reject_publish is not None and op is not Settle.ACK:
            self._reject_publish.before_growth(*self._held())  # a requeue may lengthen it
        if op is not Settle.RETURN:
            return super().settle(op, entries)
        self.ready.to_front = True
        try:
            return super().settle(op, entries)
        finally:
            self.ready.to_front = False

    def validate_consumer(self, arguments: Mapping[str, Any], no_ack: bool, prefetch: int) -> None:
        for arg in OTHER_TYPES_CONSUMER_ARGUMENTS:
            if arg in arguments:
                raise precondition_failed(f"invalid arg '{arg}' for queue '{self.name}' in vhost "
                                          f"'{self.vhost}' of queue type {RABBIT_TYPE}")
        super().validate_consumer(arguments, no_ack, prefetch)
