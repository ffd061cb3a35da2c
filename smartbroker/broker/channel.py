"""Per-channel state: consumers, unacked deliveries, prefetch, confirms, transactions.

The channel turns queue hand-overs into ``basic.deliver`` bytes on its connection's output
buffer, and turns client settlements (nack/reject/recover, and teardown) into
``Queue.settle`` calls, one per queue, performing the ``DeadLetter`` actions they return
through its ``DeadLetterer`` (the vhost), as rabbit_channel does with rabbit_queue_type's
actions. basic.ack (single or multiple) calls ``Queue.ack`` per delivery: an ack never has
an action, and it is the hot path. Unacked deliveries live in an OrderedDict keyed by delivery tag (tags
increase), so an ack with ``multiple`` pops from the front: O(1) per message.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.broker.direct_reply import rewrite_reply_to
from smartbroker.errors import ChannelError, precondition_failed
from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.queues.base import QueueEntry, Settle
from smartbroker.queues.capabilities import require

if TYPE_CHECKING:
    from smartbroker.broker.outbox import Outbox
    from smartbroker.broker.publish import PublishSession
    from smartbroker.queues.base import DeadLetter, Queue


class DeadLetterer(Protocol):
    """Performs the actions settling returns (``VirtualHost.perform``): given to the
    channel in its constructor, so broker/ never reaches through the connection."""

    def perform(self, actions: list[DeadLetter]) -> None: ...


class Unacked:
    __slots__ = ("tag", "entry", "queue", "consumer")

    def __init__(self, tag: int, entry: QueueEntry, queue: Queue,
                 consumer: ChannelConsumer | None) -> None:
        self.tag = tag
        self.entry = entry
        self.queue = queue
        self.consumer = consumer


class Channel:
    """One AMQP channel; writes only through its connection's ``Outbox``, publishes
    through the connection's ``PublishSession`` and dead-letters what settling returns
    through ``dead_letters`` (the connection's vhost)."""

    def __init__(self, conn: Outbox, number: int, session: PublishSession,
                 dead_letters: DeadLetterer) -> None:
        self.conn = conn
        self.number = number
        self.session = session
        self.dead_letters = dead_letters
        self.consumers: dict[str, ChannelConsumer] = {}
        self.unacked: OrderedDict[int, Unacked] = OrderedDict()
        self.unacked_total = 0
        self.delivery_tag = 0
        self.consumer_prefetch = 0  # basic.qos global=false: applies to new consumers
        self.global_prefetch = 0  # basic.qos global=true: shared by the channel's consumers
        self.flow_active = True
        self.last_queue: str | None = None  # for empty queue names (AMQP 0-9-1)
        self.reply_to: Any = None  # direct reply-to consumer (broker/direct_reply.py)
        self.closing = False  # we sent channel.close and await close-ok
        self.torn_down = False  # closed: nothing more is delivered here
        self.confirm = False
        self.publish_seq = 0
        self.routed_upto = 0  # every publish up to this seq has been routed
        self.confirm_sent = 0  # confirms have been sent up to this seq
        self.sync_waiting: deque[int] = deque()  # seqs whose records await fsync
        self.nacked: deque[int] = deque()  # refused seqs, nacked in order at flush
        self.tx: list[tuple[str, Any]] | None = None  # pending tx actions when in tx mode
        self.held_cancels: list[Any] | None = None  # see cancels_after_reply

    # -- delivery ------------------------------------------------------------------------
    @property
    def deliverable(self) -> bool:
        return self.flow_active and not self.closing and not self.torn_down and self.conn.writable

    def deliver(self, consumer: ChannelConsumer, queue: Queue, entry: QueueEntry) -> None:
        self.delivery_tag += 1
        tag = self.delivery_tag
        msg = entry.message if entry.delivery_count == 1 else queue.delivery_message(entry)
        if not consumer.no_ack:
            self.unacked[tag] = Unacked(tag, entry, queue, consumer)
            consumer.unacked += 1
            self.unacked_total += 1
        conn = self.conn
        conn.write(codec.deliver_frame(self.number, consumer.tag_ss, tag, entry.redelivered,
                                       msg.exchange_rk_ss))
        conn.write_many(codec.content_frames(self.number, msg.header_payload, msg.body, conn.frame_max))

    def deliver_run(self, consumer: ChannelConsumer, queue: Queue, entries: list[Any]) -> None:
        """``deliver`` for a run of first deliveries (not redelivered) a log reads in a row,
        their messages ready to send: one call and one write for the run (a stream's hot
        path)."""
        first = self.delivery_tag + 1
        self.delivery_tag += len(entries)
        if not consumer.no_ack:
            unacked = self.unacked
            for tag, entry in enumerate(entries, first):
                unacked[tag] = Unacked(tag, entry, queue, consumer)
            consumer.unacked += len(entries)
            self.unacked_total += len(entries)
        out: list[bytes] = []
        codec.first_deliveries(out, self.number, consumer.tag_ss, first,
                               [entry.message for entry in entries], self.conn.frame_max)
        self.conn.write_many(out)

    def send_get_ok(self, queue: Queue, entry: QueueEntry, no_ack: bool) -> None:
        self.delivery_tag += 1
        tag = self.delivery_tag
        if not no_ack:
            self.unacked[tag] = Unacked(tag, entry, queue, None)
            self.unacked_total += 1
        msg = queue.delivery_message(entry, on_get=True)
        conn = self.conn
        conn.write(codec.get_ok_frame(self.number, tag, entry.redelivered, msg.exchange_rk_ss,
                                      queue.message_count))
        conn.write_many(codec.content_frames(self.number, msg.header_payload, msg.body, conn.frame_max))

    def add_consumer(self, consumer: ChannelConsumer) -> None:
        self.consumers[consumer.tag] = consumer
        consumer.queue.add_consumer(consumer)

    def cancel_consumer(self, tag: str) -> ChannelConsumer | None:
        consumer = self.consumers.pop(tag, None)
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)
        return consumer

    def consumer_cancelled_by_broker(self, consumer: ChannelConsumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.conn.client_capability("consumer_cancel_notify") and not self.closing:
            cancel = codec.build(commands.Basic.Cancel, consumer_tag=consumer.tag, nowait=True)
            if self.held_cancels is not None:
                self.held_cancels.append(cancel)
            else:
                self.conn.send_method(self.number, cancel)

    @contextlib.contextmanager
    def cancels_after_reply(self) -> Iterator[list[Any]]:
        """Hold broker-sent ``basic.cancel``s for this channel's own consumers while a method
        of this channel runs (``queue.delete``): RabbitMQ sends the reply first. The caller
        sends its reply, then the held cancels."""
        self.held_cancels = held = []
        try:
            yield held
        finally:
            self.held_cancels = None

    # -- settlement ----------------------------------------------------------------------
    def _take(self, tag: int, multiple: bool) -> list[Unacked]:
        unacked = self.unacked
        if multiple:
            if tag != 0 and tag not in unacked:
                raise precondition_failed(f"unknown delivery tag {tag}")
            taken = []
            while unacked:
                first = next(iter(unacked))
                if tag and first > tag:
                    break
                taken.append(unacked.popitem(last=False)[1])
            return taken
        record = unacked.pop(tag, None)
        if record is None:
            raise precondition_failed(f"unknown delivery tag {tag}")
        return [record]

    def _release(self, records: list[Unacked]) -> set[Queue]:
        """Give the records' credit back; returns their queues."""
        touched: set[Queue] = set()
        before = self.unacked_total
        self.unacked_total -= len(records)
        for rec in records:
            consumer = rec.consumer
            if consumer is not None:
                consumer.unacked -= 1
                if consumer.parked:
                    consumer.queue.wake(consumer)
            touched.add(rec.queue)
        if self.global_prefetch and self.unacked_total < self.global_prefetch <= before:
            self._wake_all()  # the channel's shared credit is back
        return touched

    def _settle(self, op: Settle, records: list[Unacked]) -> Iterable[Queue]:
        """Release the records, then one ``Queue.settle`` per queue (entries in tag
        order); the dead-letters each returns are routed before the next queue settles.
        Returns the queues."""
        self._release(records)
        by_queue: dict[Queue, list[QueueEntry]] = {}
        for rec in records:
            by_queue.setdefault(rec.queue, []).append(rec.entry)
        for queue, entries in by_queue.items():
            actions = queue.settle(op, entries)
            if actions:
                self.dead_letters.perform(actions)
        return by_queue

    def _wake_all(self) -> None:
        """Every consumer of this channel may have credit again (global qos, flow,
        writability): parked ones rejoin their queues' rings."""
        for consumer in self.consumers.values():
            if consumer.parked:
                consumer.wake()

    def ack(self, tag: int, multiple: bool) -> None:
        if not multiple and self.tx is None:  # the common case, without the batch bookkeeping
            rec = self.unacked.pop(tag, None)
            if rec is None:
                raise precondition_failed(f"unknown delivery tag {tag}")
            self.unacked_total -= 1
            consumer = rec.consumer
            if consumer is not None:
                consumer.unacked -= 1
                if consumer.parked:
                    consumer.queue.wake(consumer)
            if self.global_prefetch and self.unacked_total + 1 == self.global_prefetch:
                self._wake_all()  # the channel's shared credit is back
            queue = rec.queue
            queue.ack(rec.entry)
            if queue.consumers:
                queue.dispatch()
            return
        records = self._take(tag, multiple)
        if self.tx is not None:
            self.tx.append(("ack", records))
            return
        self._apply_ack(records)

    def _apply_ack(self, records: list[Unacked]) -> None:
        touched = self._release(records)
        for rec in records:  # an ack never has an action: Queue.ack, as the single ack does
            rec.queue.ack(rec.entry)  # (a settle per queue measured ~10 % slower per message)
        self._redispatch(touched)

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        records = self._take(tag, multiple)
        for rec in records:
            require(rec.queue, "reject")  # the queue type's capabilities decide
        if self.tx is not None:
            self.tx.append(("nack", (records, requeue)))
            return
        self._apply_nack(records, requeue)

    def _apply_nack(self, records: list[Unacked], requeue: bool) -> None:
        self._redispatch(self._settle(Settle.REQUEUE if requeue else Settle.DISCARD, records))

    def _redispatch(self, queues: Iterable[Queue]) -> None:
        for queue in queues:
            if queue.consumers:
                queue.dispatch()

    def recover(self) -> None:
        """basic.recover(requeue=true): every unacked delivery goes back to its queue."""
        records = list(self.unacked.values())
        self.unacked.clear()
        self._redispatch(self._settle(Settle.REQUEUE, records))

    def redispatch_all(self) -> None:
        """Credit or writability came back: let our consumers' queues deliver again."""
        self._wake_all()
        self._redispatch({c.queue for c in self.consumers.values()})

    # -- publish -------------------------------------------------------------------------
    def publish(self, route: tuple[str, str, bytes], mandatory: bool, header_payload: bytes,
                flags: int, body: bytes) -> None:
        """One complete message from the client (route and header interned by the front
        end, ``flags`` from ``codec.property_flags``). Raises ChannelError when refused; the
        front end closes the channel with it (class/method 60/40). The hot path: the
        Message is built here, and the session is called twice (check, route); nothing else
        is layered in between."""
        msg = Message.routed(route, header_payload, body, flags)
        if flags & codec.FLAG_REPLY_TO_PSEUDO:  # direct reply-to
            msg = rewrite_reply_to(self, msg)
        session = self.session
        if not session.conn.has_published:
            session.first_publish()
        session.check(msg)
        if self.confirm:
            self.publish_seq += 1
        if self.tx is not None:
            self.tx.append(("publish", (msg, mandatory)))
            return
        session.route(self, msg, mandatory)

    def confirm_settled(self, seq: int, accepted: bool, wait_for_sync: bool) -> None:
        """A publish was routed: confirm it at the next flush (after fsync if persistent)."""
        if not accepted:
            self.nacked.append(seq)
        elif wait_for_sync:
            self.sync_waiting.append(seq)
        self.routed_upto = seq
        self.conn.confirms_pending(self)

    def sync_mark(self) -> int:
        """Group commit: the highest seq covered by the fsync that is starting now."""
        return self.sync_waiting[-1] if self.sync_waiting else 0

    def sync_failed(self, mark: int) -> None:
        """The store could not fsync: nack what was waiting (the publisher may retry)."""
        waiting = self.sync_waiting
        while waiting and waiting[0] <= mark:  # in order: a later publish may be refused
            bisect.insort(self.nacked, waiting.popleft())  # already (flush acks up to it)
        self.conn.confirms_pending(self)

    def nack_waiting(self, seq: int) -> None:
        """Publish ``seq``, still waiting for its sync, was refused after routing (a
        cluster leader's reject-publish): nacked alone, its neighbours still confirmed."""
        try:
            self.sync_waiting.remove(seq)
        except ValueError:
            return  # settled already (the channel closed meanwhile)
        bisect.insort(self.nacked, seq)
        self.conn.confirms_pending(self)

    def synced(self, mark: int) -> None:
        waiting = self.sync_waiting
        while waiting and waiting[0] <= mark:
            waiting.popleft()
        self.conn.confirms_pending(self)

    def flush_confirms(self) -> None:
        """Send acks (multiple) and nacks, in order, for every settled seq below the first
        one still waiting for fsync."""
        upto = self.routed_upto
        if self.sync_waiting:
            upto = min(upto, self.sync_waiting[0] - 1)
        sent = self.confirm_sent
        if upto <= sent:
            return
        write = self.conn.write
        nacked = self.nacked
        while nacked and nacked[0] <= upto:
            seq = nacked.popleft()
            if seq - 1 > sent:
                write(codec.ack_frame(self.number, seq - 1, seq - 1 - sent > 1))
            write(codec.nack_frame(self.number, seq, False))
            sent = seq
        if upto > sent:
            write(codec.ack_frame(self.number, upto, upto - sent > 1))
        self.confirm_sent = upto

    # -- transactions --------------------------------------------------------------------
    def tx_commit(self) -> set[Any]:
        """Apply the transaction's publishes and settlements; returns the logs they wrote
        to, which ``tx.commit-ok`` must wait to see fsynced."""
        actions, self.tx = self.tx or [], []
        logs: set[Any] = set()
        store = self.session.store
        route = self.session.route
        for kind, payload in actions:
            if kind == "publish":
                logs.update(route(self, *payload).logs)
                continue
            records = payload if kind == "ack" else payload[0]
            if store is not None and any(rec.entry.store_id is not None for rec in records):
                logs.add(store.log)
            if kind == "ack":
                self._apply_ack(payload)
            else:
                self._apply_nack(*payload)
        return logs

    def tx_rollback(self) -> None:
        """Discard pending publishes; deliveries settled in the transaction stay unacked."""
        actions, self.tx = self.tx or [], []
        restored = [rec for kind, payload in actions if kind != "publish"
                    for rec in (payload if kind == "ack" else payload[0])]
        if restored:
            merged = sorted([*self.unacked.values(), *restored], key=lambda rec: rec.tag)
            self.unacked = OrderedDict((rec.tag, rec) for rec in merged)

    # -- teardown ------------------------------------------------------------------------
    def teardown(self) -> None:
        """Channel or connection closed: requeue unacked deliveries, then cancel consumers
        (so a single-active-consumer successor gets the requeued messages first)."""
        self.torn_down = True
        if self.tx:
            self.tx_rollback()  # settlements of an uncommitted transaction never happened
        records = list(self.unacked.values())
        self.unacked.clear()
        self._settle(Settle.RETURN, records)  # a requeue dispatches itself
        for tag in list(self.consumers):
            self.cancel_consumer(tag)
        self.tx = None


__all__ = ["Channel", "ChannelError"]
