"""The leader's side of queues used from other nodes: remote consumers, and the calls
(basic.get, purge, delete, counts, consume) other nodes make on its queues (forwarded
publishes are ``forwarding_intake``'s).

- A remote consumer is a ``RelayConsumer`` in the queue's consumer ring, like a
  channel's: it takes a delivery while it has the credit its node granted, and sends it
  on ``DELIVERIES``; its node's acks, requeues and discards (``CONSUMER_OPS``) settle the
  entries it holds, with the queue's own ``ack``/``settle``, so redelivered flags,
  dead-lettering and delivery limits are the queue's, exactly as on one node.
- A peer that goes down takes its consumers with it: what they held is requeued
  (``redelivered``), as when a connection closes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.forwarding_intake import RETRY, WAIT_FOR_QUEUE
from smartbroker.cluster.forwarding_wire import DELIVERIES, Kind, Op
from smartbroker.cluster.link_codec import ChannelSpec
from smartbroker.errors import AMQPError, not_found
from smartbroker.queues.base import Queue, QueueEntry, Settle
from smartbroker.queues.capabilities import require

log = logging.getLogger("smartbroker.cluster")
KNOWN_OPS = frozenset(int(op) for op in Op)
_ACK = int(Op.ACK)  # plain ints: compared once per operation on the hot path
_CREDIT = int(Op.CREDIT)
_DELIVER = int(Kind.DELIVER)  # struct packs a plain int faster than an IntEnum


class Link(Protocol):
    """What forwarding needs from the cluster link (``cluster/link.py``)."""

    def send(self, peer: str, spec: ChannelSpec, item: tuple) -> bool: ...

    def writable(self, peer: str, spec: ChannelSpec) -> bool: ...

    async def call(self, peer: str, method: str, payload: bytes) -> bytes: ...


class RelayConsumer:
    """A consumer on another node, as the leader's queue sees it (``queues.base.Consumer``)."""

    __slots__ = ("service", "peer", "sub", "queue", "tag", "no_ack", "exclusive", "priority",
                 "arguments", "unacked", "parked", "credit", "handles", "cancelled")

    def __init__(self, service: LeaderService, peer: str, sub: int, queue: Queue,
                 spec: dict[str, Any]) -> None:
        self.service = service
        self.peer = peer
        self.sub = sub
        self.queue = queue
        self.tag = str(spec.get("tag", ""))
        self.no_ack = bool(spec.get("no_ack", False))
        self.exclusive = bool(spec.get("exclusive", False))
        self.priority = int(spec.get("priority", 0))
        self.arguments = dict(spec.get("arguments") or {})
        self.unacked = 0
        self.parked = False
        self.credit = int(spec.get("credit", 0))
        self.handles: dict[int, QueueEntry] = {}
        self.cancelled = False  # basic.cancel: no more deliveries, held ones may be settled

    def can_take(self) -> bool:
        return self.credit > 0 and self.service.link.writable(self.peer, DELIVERIES)

    def credit_left(self) -> int:
        return self.credit if self.service.link.writable(self.peer, DELIVERIES) else 0

    def deliver(self, queue: Queue, entry: QueueEntry) -> None:
        self.credit -= 1
        msg = entry.message if entry.delivery_count == 1 else queue.delivery_message(entry)
        handle = 0
        if not self.no_ack:
            handle = self.service.next_handle()
            self.handles[handle] = entry
            self.unacked += 1
        self.service.link.send(self.peer, DELIVERIES, (
            _DELIVER, self.sub, handle, entry.redelivered, 0,
            msg.exchange_rk_ss, msg.header_payload, msg.body))

    def cancelled_by_broker(self) -> None:
        self.service.consumers.pop((self.peer, self.sub), None)
        self.service.link.send(self.peer, DELIVERIES, (Kind.CANCELLED, self.sub, 0, 0, 0,
                                                       b"", b"", b""))

    def settle(self, op: Op, handle: int) -> None:
        """Requeue or discard one held delivery (the caller wakes and dispatches)."""
        entry = self.handles.pop(handle, None)
        if entry is None:
            return  # settled already (a requeue after a peer-down): nothing to do
        self.unacked -= 1
        queue = self.queue
        if op is Op.ACK:
            queue.ack(entry)
        else:
            actions = queue.settle(Settle.REQUEUE if op is Op.REQUEUE else Settle.DISCARD, [entry])
            if actions:
                self.service.perform(queue, actions)

    def requeue_all(self) -> None:
        """Its node is gone or its channel closed: every held entry back to the queue."""
        entries = list(self.handles.values())
        self.handles.clear()
        self.unacked = 0
        if entries:
            actions = self.queue.settle(Settle.REQUEUE, entries)
            if actions:
                self.service.perform(self.queue, actions)


class LeaderService:
    """This node's queues, served to the other nodes over the link. ``vhosts``: the
    broker's vhosts by name (read at each call, so vhosts added later are served)."""

    def __init__(self, vhosts: dict[str, Any], link: Link) -> None:
        self.vhosts = vhosts
        self.link = link
        self.consumers: dict[tuple[str, int], RelayConsumer] = {}
        self.gets: dict[tuple[str, int], tuple[Queue, QueueEntry]] = {}  # basic.get, unacked
        self.next_handle: Callable[[], int] = itertools.count(1).__next__

    def calls(self) -> dict[str, Callable[[str, bytes], Awaitable[bytes] | bytes]]:
        """The link calls this service answers, by method."""
        handlers = {wire.GET: self.get, wire.PURGE: self.purge, wire.STATS: self.stats,
                    wire.CONSUME: self.consume, wire.DELETE: self.delete}
        calls = {method: self._when_known(handler) for method, handler in handlers.items()}
        calls[wire.STATS_ALL] = self.stats_all
        return calls

    def stats_all(self, peer: str, payload: bytes) -> bytes:
        """The counts of every queue led here, for the other nodes' queue lists."""
        rows = [[q.vhost, q.name, q.message_count, q.consumer_count, q.unacked_count,
                 q.message_bytes]
                for vhost in list(self.vhosts.values()) for q in list(vhost.queues.values())
                if getattr(q, "leader", None) is None]
        return wire.encode({"code": 0, "queues": rows})

    def _when_known(self, handler: Callable[[str, bytes], bytes]
                    ) -> Callable[[str, bytes], Awaitable[bytes] | bytes]:
        """A call about a queue this node has not got yet (the caller's node saw its
        definition first) waits for it, as a forwarded publish does (``forwarding_intake``),
        then is answered; at once in the usual case."""
        def call(peer: str, payload: bytes) -> Awaitable[bytes] | bytes:
            if self._known(payload):
                return handler(peer, payload)
            return self._later(handler, peer, payload)

        return call

    def _known(self, payload: bytes) -> bool:
        try:
            spec = wire.decode(payload)
        except ValueError:
            return True  # the handler answers the garbage
        vhost = self.vhosts.get(str(spec.get("vhost", "")))
        q = None if vhost is None else vhost.queues.get(str(spec.get("queue", "")))
        return q is not None and getattr(q, "leader", None) is None

    async def _later(self, handler: Callable[[str, bytes], bytes], peer: str,
                     payload: bytes) -> bytes:
        deadline = time.monotonic() + WAIT_FOR_QUEUE
        while not self._known(payload) and time.monotonic() < deadline:
            await asyncio.sleep(RETRY)
        return handler(peer, payload)

    def perform(self, queue: Queue, actions: list[Any]) -> None:
        vhost = self.vhosts.get(queue.vhost)
        if vhost is not None:
            vhost.perform(actions)

    def _queue(self, payload: dict[str, Any]) -> Queue:
        vhost = self.vhosts.get(str(payload.get("vhost", "")))
        name = str(payload.get("queue", ""))
        q = None if vhost is None else vhost.queues.get(name)
        if q is None or getattr(q, "leader", None) is not None:  # gone, or not led here
            raise not_found(f"no queue '{name}' in vhost '{payload.get('vhost', '')}'")
        return q

    # -- consumers -----------------------------------------------------------------------
    def consume(self, peer: str, payload: bytes) -> bytes:
        try:
            spec = wire.decode(payload)
            q = self._queue(spec)
            if q.consumers and (spec.get("exclusive") or q.exclusive_consumer):
                raise AMQPError(403, f"queue '{q.name}' in vhost '{q.vhost}' in exclusive use")
            q.validate_consumer(spec.get("arguments") or {}, bool(spec.get("no_ack")),
                                int(spec.get("prefetch", 0)))
        except AMQPError as err:
            return wire.encode({"code": err.code, "text": err.text})
        except (ValueError, TypeError) as exc:
            return wire.encode({"code": 406, "text": str(exc)})
        try:
            sub = int(spec.get("sub", 0))
            consumer = RelayConsumer(self, peer, sub, q, spec)
        except (ValueError, TypeError) as exc:
            return wire.encode({"code": 406, "text": f"malformed consume: {exc}"})
        self.consumers[(peer, sub)] = consumer
        q.add_consumer(consumer)
        return wire.encode({"code": 0})

    def on_consumer_ops(self, peer: str, items: list[tuple]) -> None:
        """One link frame's operations, in order; each queue they touched dispatches once,
        after the whole batch (not once per ack and once per credit grant): what it then
        delivers is the same, the requeues of the batch first, as on one node."""
        consumers = self.consumers
        touched: dict[int, Queue] = {}
        for op, sub, handle, count in items:
            if op == _ACK:  # the hot path: one ack of a remote consumer's delivery
                consumer = consumers.get((peer, sub))
                if consumer is None:
                    continue
                entry = consumer.handles.pop(handle, None)
                if entry is None:
                    continue  # settled already (a requeue after a peer-down)
                consumer.unacked -= 1
                queue = consumer.queue
                queue.ack(entry)
            elif op == _CREDIT:
                consumer = consumers.get((peer, sub))
                if consumer is None or consumer.cancelled:
                    continue
                consumer.credit += count
                queue = consumer.queue
            elif op == Op.DRAIN:  # a spread stream's consumer moves its credit elsewhere
                consumer = consumers.get((peer, sub))
                if consumer is not None:
                    returned, consumer.credit = max(consumer.credit, 0), 0
                    self.link.send(peer, DELIVERIES, (Kind.DRAINED, sub, 0, 0, returned,
                                                      b"", b"", b""))
                continue
            elif op not in KNOWN_OPS:
                continue  # a newer peer's operation: nothing to do with it here
            elif op >= Op.GET_ACK:
                queue = self._settle_get(peer, Op(op), handle)
                if queue is not None:
                    touched[id(queue)] = queue
                continue
            else:
                consumer = consumers.get((peer, sub))
                if consumer is None:
                    continue
                queue = consumer.queue
                if op == Op.CANCEL:
                    consumer.cancelled = True
                    queue.remove_consumer(consumer)
                    if count:  # the channel is gone: nothing it held can be acked any more
                        consumer.requeue_all()
                else:  # REQUEUE, DISCARD
                    consumer.settle(Op(op), handle)
            if consumer.parked and not consumer.cancelled:
                queue.wake(consumer)
            touched[id(queue)] = queue
            if consumer.cancelled and not consumer.handles:
                consumers.pop((peer, sub), None)
        for queue in touched.values():
            if queue.consumers:
                queue.dispatch()

    def peer_down(self, peer: str) -> None:
        """Its consumers are gone and what they held goes back, redelivered."""
        for key in [k for k in self.consumers if k[0] == peer]:
            consumer = self.consumers.pop(key)
            consumer.queue.remove_consumer(consumer)
            consumer.requeue_all()
        for key in [k for k in self.gets if k[0] == peer]:
            q, entry = self.gets.pop(key)
            self.perform(q, q.settle(Settle.REQUEUE, [entry]))

    # -- calls ---------------------------------------------------------------------------
    def get(self, peer: str, payload: bytes) -> bytes:
        try:
            spec = wire.decode(payload)
            q = self._queue(spec)
            require(q, "get")
            no_ack = bool(spec.get("no_ack"))
            entry = q.get(no_ack)
        except AMQPError as err:
            return wire.encode({"code": err.code, "text": err.text})
        except ValueError as exc:
            return wire.encode({"code": 406, "text": str(exc)})
        if entry is None:
            return wire.encode({"code": 0, "empty": True})
        handle = 0
        if not no_ack:
            handle = self.next_handle()
            self.gets[(peer, handle)] = (q, entry)
        msg = q.delivery_message(entry, on_get=True)
        return wire.encode({"code": 0, "handle": handle, "redelivered": entry.redelivered,
                            "count": q.message_count, "route": bytearray(msg.exchange_rk_ss),
                            "properties": bytearray(msg.header_payload),
                            "body": bytearray(msg.body)})  # bytearray: AMQP byte arrays

    def _settle_get(self, peer: str, op: Op, handle: int) -> Queue | None:
        """Settle a basic.get delivery; its queue (to dispatch after the batch), if any."""
        found = self.gets.pop((peer, handle), None)
        if found is None:
            return None
        q, entry = found
        if op is Op.GET_ACK:
            q.ack(entry)
        else:
            self.perform(q, q.settle(Settle.REQUEUE if op is Op.GET_REQUEUE else Settle.DISCARD,
                                     [entry]))
        return q

    def purge(self, peer: str, payload: bytes) -> bytes:
        try:
            q = self._queue(wire.decode(payload))
            require(q, "purge")
        except AMQPError as err:
            return wire.encode({"code": err.code, "text": err.text})
        except ValueError as exc:
            return wire.encode({"code": 406, "text": str(exc)})
        return wire.encode({"code": 0, "count": q.purge()})

    def delete(self, peer: str, payload: bytes) -> bytes:
        """queue.delete from another node, with RabbitMQ's if-unused/if-empty checks."""
        try:
            spec = wire.decode(payload)
            vhost = self.vhosts.get(str(spec.get("vhost", "")))
            q = None if vhost is None else vhost.queues.get(str(spec.get("queue", "")))
            if q is None or getattr(q, "leader", None) is not None:
                return wire.encode({"code": 0, "count": 0})  # gone: RabbitMQ says 0
            count = vhost.delete_queue(q.name, if_unused=bool(spec.get("if_unused")),
                                       if_empty=bool(spec.get("if_empty")))
        except AMQPError as err:
            return wire.encode({"code": err.code, "text": err.text})
        except ValueError as exc:
            return wire.encode({"code": 406, "text": str(exc)})
        return wire.encode({"code": 0, "count": count})

    def stats(self, peer: str, payload: bytes) -> bytes:
        try:
            q = self._queue(wire.decode(payload))
        except AMQPError as err:
            return wire.encode({"code": err.code, "text": err.text})
        except ValueError as exc:
            return wire.encode({"code": 406, "text": str(exc)})
        return wire.encode({"code": 0, "messages": q.message_count,
                            "consumers": q.consumer_count, "unacked": q.unacked_count,
                            "bytes": q.message_bytes})
