"""Consumers of queues another node leads: subscribed on the leader, deliveries relayed.

A client's consumer stays a ``ChannelConsumer`` on its own channel: delivery tags,
prefetch and unacked records are its channel's, as for a local queue. Its queue here is
a ``RemoteQueue``, which subscribes it on the leader (a ``RelayConsumer`` there) with
credit: the leader sends at most what it was granted, and this node grants what the
consumer can take (``credit_left``: prefetch minus unacked, the channel's global
prefetch, flow and writability) minus what is already granted. Each ack gives the
leader one more, so a prefetch of N means at most N unacked on the client, exactly as
on one node. A consumer with no limit (no_ack or prefetch 0) gets a window of
``WINDOW``, topped up at half. No credit goes out for a subscription whose basic.consume
the leader has not answered yet (it would drop it): it goes with the answer.

Deliveries arrive in batches (``DELIVERIES``) and go to ``Channel.deliver`` as a local
queue's would (the channel remaps the tag: its own counter; the leader's handle stays
in the entry). A delivery for a consumer that is gone goes back (requeue) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.forwarding_wire import Kind, Op
from smartbroker.cluster.link_peer import PeerDown

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding
    from smartbroker.cluster.remote_queue import RemoteQueue
    from smartbroker.queues.base import Consumer

WINDOW = 256  # credit of a consumer without a prefetch limit
CARRY_ON = 30.0  # seconds a replicated queue's consumer waits for a new leader
CARRY_ON_POLL = 0.2
_DELIVER = int(Kind.DELIVER)  # a plain int: compared once per delivery
_CANCELLED, _DRAINED = int(Kind.CANCELLED), int(Kind.DRAINED)


class Subscription:
    __slots__ = ("sub", "queue", "consumer", "granted", "early", "leader", "asked")

    def __init__(self, sub: int, queue: RemoteQueue, consumer: Consumer) -> None:
        self.sub = sub
        self.queue = queue
        self.consumer = consumer
        self.leader = queue.leader  # where it was made (a replicated queue's may move)
        self.granted = 0  # deliveries the leader may still send
        # deliveries that arrived before the client was sent consume-ok (the leader
        # dispatches as soon as it accepts): delivered right after it
        self.early: list[tuple] | None = None
        # its basic.consume is on its way (``subscribe``): the leader does not know the
        # subscription yet and would drop credit sent for it, so none is sent until it
        # answers (a consumer that carried on across a transfer, acking the old
        # leader's deliveries while the new leader was still taking over, got nothing
        # more: the credit its acks gave back never reached the new leader)
        self.asked = False


class Subscriptions:
    """Every consumer on this node of a queue led elsewhere, by subscription id."""

    def __init__(self, node: QueueForwarding) -> None:
        self.node = node
        self.by_sub: dict[int, Subscription] = {}
        self.by_consumer: dict[int, Subscription] = {}
        self._ids: Callable[[], int] = itertools.count(1).__next__
        self._woken: list[Consumer] = []  # to grant credit to at the end of this pass
        self._awaiting: set[int] = set()  # replicated queues whose consumers await a leader

    def _credit(self, consumer: Consumer) -> int:
        credit_left = getattr(consumer, "credit_left", None)
        left = credit_left() if credit_left is not None else (1 if consumer.can_take() else 0)
        return min(left, WINDOW)

    def open(self, queue: RemoteQueue, consumer: Consumer) -> tuple[Subscription, bytes]:
        """Register a subscription and the ``basic.consume`` call that asks the leader."""
        sub = Subscription(self._ids(), queue, consumer)
        self.by_sub[sub.sub] = sub
        self.by_consumer[id(consumer)] = sub
        sub.granted = self._credit(consumer)
        consumer.parked = sub.granted == 0
        payload = wire.encode({
            "vhost": queue.vhost, "queue": queue.name, "sub": sub.sub, "tag": consumer.tag,
            "no_ack": consumer.no_ack, "exclusive": consumer.exclusive,
            "priority": consumer.priority, "arguments": dict(consumer.arguments),
            "credit": sub.granted, "prefetch": getattr(consumer, "prefetch", 0)})
        return sub, payload

    def subscribed(self, consumer: Consumer) -> bool:
        return id(consumer) in self.by_consumer

    def drop(self, sub: Subscription) -> None:
        """A subscription the leader refused (or never answered): forgotten here."""
        self.by_sub.pop(sub.sub, None)
        self.by_consumer.pop(id(sub.consumer), None)

    def started(self, sub: Subscription) -> None:
        """The client has its consume-ok: what came early is delivered now."""
        early, sub.early = sub.early, None
        if early:
            self.on_deliveries(sub.queue.leader, early)

    def subscribe(self, queue: RemoteQueue, consumer: Consumer) -> None:
        """A consumer added without ``consume_later`` (no answer to wait for): a refusal
        cancels it, as when its queue goes away."""
        if carries_on(self.node, queue) and not self.node.is_up(queue.leader):
            self._carry_on(queue)  # a replicated queue's consumer waits for a leader
            return
        sub, payload = self.open(queue, consumer)
        sub.asked = True
        self.node.spawn_call(queue.leader, wire.CONSUME, payload,
                             lambda reply: self._answered(sub, reply))

    def _answered(self, sub: Subscription, reply: dict[str, Any] | None) -> None:
        """No answer (the leader went meanwhile): a replicated queue's consumer carries on
        and subscribes at the next leader; anything else as ``_subscribed``."""
        sub.asked = False
        if sub.sub not in self.by_sub:  # cancelled while its basic.consume was on its way
            if reply is not None and not reply.get("code"):  # the leader took it after the
                gone = bool(getattr(getattr(sub.consumer, "channel", None), "torn_down", False))
                with contextlib.suppress(PeerDown):  # CANCEL (ignored then): cancel it now
                    self.node.send_op(sub.leader, Op.CANCEL, sub.sub, 0, int(gone))
            return
        if reply is None and carries_on(self.node, sub.queue):
            self.drop(sub)
            self._carry_on(sub.queue)
            return
        self._subscribed(sub, reply)
        if sub.sub in self.by_sub:  # accepted: what the acks meanwhile gave back goes now
            self.top_up(sub.consumer)

    def _subscribed(self, sub: Subscription, reply: dict[str, Any] | None) -> None:
        """The leader refused (or is gone): the client's consumer is cancelled, as when
        its queue goes away."""
        if reply is not None and not reply.get("code"):
            return
        if self.by_sub.pop(sub.sub, None) is None:
            return
        self.by_consumer.pop(id(sub.consumer), None)
        if sub.consumer in sub.queue.consumers:
            sub.queue.consumers.remove(sub.consumer)
        sub.consumer.cancelled_by_broker()

    def unsubscribe(self, queue: RemoteQueue, consumer: Consumer) -> None:
        sub = self.by_consumer.pop(id(consumer), None)
        if sub is None:
            return
        del self.by_sub[sub.sub]
        gone = bool(getattr(getattr(consumer, "channel", None), "torn_down", False))
        self.node.send_op(queue.leader, Op.CANCEL, sub.sub, 0, int(gone))

    def wake(self, consumer: Consumer) -> None:
        """Credit may be back: granted at the end of this pass, after the settlement that
        woke it (a requeue reaches the leader before the credit, so the requeued message
        is the one delivered next, as on one node)."""
        consumer.parked = False
        self._woken.append(consumer)
        if len(self._woken) == 1:
            asyncio.get_running_loop().call_soon(self._grant_woken)

    def _grant_woken(self) -> None:
        woken, self._woken = self._woken, []
        for consumer in woken:
            self.top_up(consumer)

    def top_up(self, consumer: Consumer) -> None:
        """Grant the leader what ``consumer`` can take now beyond what it was granted. A
        consumer left without credit is parked: its channel wakes it (``RemoteQueue.wake``)
        when an ack, qos, flow or writability may give some back, as a local queue's ring
        does, so nothing scans consumers per ack."""
        sub = self.by_consumer.get(id(consumer))
        if sub is None or sub.asked:
            return  # (asked: topped up when the leader answers)
        credit = self._credit(consumer)
        consumer.parked = credit == 0
        want = credit - sub.granted
        if want > 0 and (want >= WINDOW // 2 or sub.granted < WINDOW // 2):
            sub.granted += want
            self.node.send_op(sub.queue.leader, Op.CREDIT, sub.sub, 0, want)

    def drain(self, consumer: Consumer) -> None:
        """Ask the leader for the credit ``consumer`` was granted and has not used (a
        spread stream's consumer moves it to another node, ``cluster/spread_credit.py``);
        ``granted`` counts it until the answer, so it is never granted twice."""
        sub = self.by_consumer.get(id(consumer))
        if sub is not None and sub.granted > 0 and not sub.asked:  # (asked: see Subscription)
            self.node.send_op(sub.queue.leader, Op.DRAIN, sub.sub, 0, 0)

    def _drained(self, sub: Subscription, count: int) -> None:
        """The leader gave ``count`` back, after every delivery it sent before."""
        sub.granted = max(sub.granted - count, 0)
        wake = getattr(sub.consumer, "drained", None)
        if wake is not None:
            wake()

    def on_deliveries(self, peer: str, items: list[tuple]) -> None:
        from smartbroker.cluster.remote_queue import RemoteEntry

        touched: dict[int, Subscription] = {}
        for kind, sub_id, handle, redelivered, _count, route, properties, body in items:
            sub = self.by_sub.get(sub_id)
            if kind != _DELIVER:
                if kind == _CANCELLED and sub is not None:
                    self._subscribed(sub, None)
                elif kind == _DRAINED and sub is not None:
                    self._drained(sub, _count)
                continue
            if sub is None:  # cancelled here while it was on its way
                if handle:
                    self.node.send_op(peer, Op.REQUEUE, sub_id, handle, 0)
                continue
            if sub.early is not None:
                sub.early.append((kind, sub_id, handle, redelivered, _count, route, properties,
                                  body))
                continue
            sub.granted -= 1
            channel = getattr(sub.consumer, "channel", None)
            if channel is not None and (channel.closing or channel.torn_down):
                if handle:  # its channel is closing: nothing more may go out on it
                    self.node.send_op(peer, Op.REQUEUE, sub_id, handle, 0)
                continue
            msg = wire.message(route, properties, body)
            entry = RemoteEntry(msg, handle, bool(redelivered), sub_id)
            sub.queue.stats["deliver"] += 1
            sub.consumer.deliver(sub.queue, entry)
            touched[sub_id] = sub
        for sub in touched.values():
            if sub.sub in self.by_sub:
                self.top_up(sub.consumer)

    def peer_down(self, peer: str) -> None:
        """The leader is gone: its consumers here are cancelled (basic.cancel), as when a
        queue's node goes down in RabbitMQ. A replicated quorum queue's consumers carry on
        (as RabbitMQ's do): they subscribe again at its next leader."""
        for sub in [s for s in self.by_sub.values() if s.leader == peer]:
            if carries_on(self.node, sub.queue):
                self.drop(sub)  # the consumer stays on its queue, without a subscription
                self._carry_on(sub.queue)
            else:
                self._subscribed(sub, None)

    def _carry_on(self, queue: RemoteQueue) -> None:
        """Its consumers without a subscription subscribe once a leader is up (one
        waiting task per queue)."""
        if id(queue) not in self._awaiting:
            self._awaiting.add(id(queue))
            self.node._keep(self._await_leader(queue))

    async def _await_leader(self, queue: RemoteQueue) -> None:
        """Until a leader of ``queue`` is up (the one the placement names: a new one, or
        the old one back within its lease), then ``resubscribe``; consumers still waiting
        after ``CARRY_ON`` seconds are cancelled."""
        try:
            deadline = asyncio.get_running_loop().time() + CARRY_ON
            while asyncio.get_running_loop().time() < deadline:
                if not queue.consumers or self._all_at_leader(queue):
                    return
                if self.node.is_up(queue.leader):
                    self.resubscribe(queue)
                    return
                await asyncio.sleep(CARRY_ON_POLL)
            for consumer in list(queue.consumers):
                if id(consumer) not in self.by_consumer:
                    queue.consumers.remove(consumer)
                    consumer.cancelled_by_broker()
        finally:
            self._awaiting.discard(id(queue))

    def _all_at_leader(self, queue: RemoteQueue) -> bool:
        subs = self.by_consumer
        return all(id(c) in subs and subs[id(c)].leader == queue.leader
                   for c in queue.consumers)

    def resubscribe(self, queue: RemoteQueue) -> None:
        """A replicated queue's leader moved: each of its consumers here subscribes at the
        new leader, afresh (the old leader's delivery handles mean nothing there: what it
        held unacked comes back ``redelivered`` from the log, and acks of the old
        deliveries are ignored there)."""
        for consumer in list(queue.consumers):
            old = self.by_consumer.get(id(consumer))
            if old is not None:
                if old.leader == queue.leader:
                    continue
                self.drop(old)
                self.node.send_op(old.leader, Op.CANCEL, old.sub, 0, 1)  # if it is back
            self.subscribe(queue, consumer)


def carries_on(node: Any, queue: Any) -> bool:
    """Whether ``queue`` is replicated (its consumers survive its leader)."""
    table = getattr(node, "placement", None)
    placement = None if table is None else table.get(queue.vhost, queue.name)
    return placement is not None and len(placement.members) > 1
