"""A queue another node leads, as this node's vhost holds it: the ``Queue`` interface,
so routing, basic.consume/get, purge and delete work unchanged on every node.

Nothing is stored here: a publish is forwarded (``forwarding_publish.Forwarder``), a
consumer subscribes on the leader (``remote_consumer.Subscriptions``), and basic.get,
purge and the counts are calls to the leader. basic.get and queue.purge answer when
the leader does: their handlers call ``get_later``/``purge_later`` when a queue has
them (``handlers/basic.py``, ``handlers/queue.py``), as a tx.commit-ok waits for fsync.

When the leader is down, the queue answers as RabbitMQ answers for a durable classic
queue whose home node is down (rabbit_amqqueue:priv_absent): 404 NOT_FOUND "home node
'N' of durable queue 'Q' in vhost 'V' is down or inaccessible" to consume, get and
purge; publishes routed to it are dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pamqp import commands

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.forwarding_wire import CONSUMER_OPS, Op
from smartbroker.cluster.link_peer import CallError, PeerDown
from smartbroker.cluster.remote_consumer import carries_on
from smartbroker.errors import AMQPError, ChannelError, ConnectionError, not_found
from smartbroker.queues.base import (
    ACCEPTED,
    REFUSED,
    Consumer,
    DeadLetter,
    PublishResult,
    QueueEntry,
    Settle,
)
from smartbroker.queues.capabilities import Capabilities, check_consume, require

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding
    from smartbroker.message import Message

log = logging.getLogger("smartbroker.cluster")
_ACK = int(Op.ACK)  # struct packs a plain int faster than an IntEnum


class RemoteEntry(QueueEntry):
    """A delivery (or basic.get) from the leader: ``seq`` holds the leader's handle."""

    __slots__ = ("sub", "leader")  # leader: a basic.get's, set only for them

    def __init__(self, message: Message, handle: int, redelivered: bool, sub: int) -> None:
        super().__init__(message, handle)
        self.redelivered = redelivered
        self.delivery_count = 1  # the leader already made the delivered message
        self.sub = sub


def reply_error(reply: dict[str, Any]) -> AMQPError | None:
    """A refusal the leader answered, as the error this node raises."""
    code = int(reply.get("code", 0))
    if not code:
        return None
    text = str(reply.get("text", ""))
    return ConnectionError(code, text) if code in (503, 504, 530, 540) else ChannelError(code, text)


class RemoteQueue:
    """``Queue`` for a queue led by ``leader``; its type's capabilities are the leader's
    queue type's, so refusals (a stream's basic.get, ...) are the same replies."""

    type_name: ClassVar[str] = "classic"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, vhost: str, leader: str, node: QueueForwarding, *,
                 durable: bool = True, auto_delete: bool = False,
                 arguments: Mapping[str, Any] | None = None,
                 capabilities: Capabilities | None = None, type_name: str = "classic") -> None:
        self.name = name
        self.vhost = vhost
        self.leader = leader
        self.node = node
        self.durable = durable
        self.auto_delete = auto_delete
        self.exclusive_owner = None
        self.arguments = dict(arguments or {})
        if capabilities is not None:
            self.capabilities = capabilities  # type: ignore[misc]
        self.type_name = type_name  # type: ignore[misc]
        self.consumers: list[Consumer] = []
        self.bindings: set[Any] = set()
        self.policy_name: str | None = None
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "redeliver": 0, "dead_lettered": 0}
        self.uses_store = False  # the leader persists it
        self.counts = {"messages": 0, "consumers": 0, "unacked": 0, "bytes": 0}
        # encoded once: every forwarded publish carries them
        self._vhost_bytes, self._name_bytes = vhost.encode(), name.encode()

    # -- availability --------------------------------------------------------------------
    def absent(self) -> ChannelError:
        return not_found(f"home node '{self.leader}' of durable queue '{self.name}' in vhost "
                         f"'{self.vhost}' is down or inaccessible")

    def check_available(self) -> None:
        if not self.node.is_up(self.leader):
            raise self.absent()

    # -- publish -------------------------------------------------------------------------
    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        forwarder = self.node.forwarder(self.leader)
        if forwarder is None:  # home node down: dropped, as RabbitMQ drops it; a
            # replicated queue's is nacked (the publisher sends it again to the next leader)
            return REFUSED if carries_on(self.node, self) else ACCEPTED
        forwarder.forward(self._vhost_bytes, self._name_bytes, message)
        self.stats["publish"] += 1
        # a claim: if the leader refuses or loses this publish, its own publisher is
        # nacked for it. Confirms are released per publisher (MessageStore._serve), so a
        # forwarder cannot tell from its sync rounds whose publish a loss was.
        host = self.node.vhosts.get(self.vhost)
        store = host.store if host is not None else None
        if store is None:
            return forwarder.result
        return forwarder.claim(store.claims)

    # -- consumers -----------------------------------------------------------------------
    def validate_consumer(self, arguments: Mapping[str, Any], no_ack: bool, prefetch: int) -> None:
        self.check_available()
        check_consume(self, no_ack, prefetch)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        if not self.node.subscriptions.subscribed(consumer):
            self.node.subscriptions.subscribe(self, consumer)

    def consume_later(self, conn: Any, ch: Any, consumer: Any, nowait: bool) -> None:
        """basic.consume: the leader accepts (its exclusivity and argument checks, its
        replies) before the client gets consume-ok and the first delivery."""
        self.check_available()
        subscriptions = self.node.subscriptions
        sub, payload = subscriptions.open(self, consumer)
        sub.early = []

        async def consume() -> None:
            try:
                await self._call_raw(wire.CONSUME, payload)
            except BaseException:
                subscriptions.drop(sub)
                raise
            if ch.closing or ch.torn_down:  # gone meanwhile: what came early goes back
                subscriptions.drop(sub)
                self.node.send_op(self.leader, Op.CANCEL, sub.sub, 0, 1)
                return
            if not nowait:
                conn.send_method(ch.number, commands.Basic.ConsumeOk(consumer_tag=consumer.tag))
            ch.add_consumer(consumer)
            subscriptions.started(sub)

        self.node.spawn(consume(), conn, ch, (60, 20))

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            self.node.subscriptions.unsubscribe(self, consumer)

    def wake(self, consumer: Consumer) -> None:
        self.node.subscriptions.wake(consumer)

    def dispatch(self) -> None:
        """Deliveries come from the leader; credit goes back to it through ``wake`` (a
        consumer left without credit is parked, and its channel wakes it)."""
        return None

    @property
    def exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)

    # -- settlement ----------------------------------------------------------------------
    def ack(self, entry: Any) -> None:
        """basic.ack's hot path: a consumer's delivery goes straight to the link (the
        rest, a basic.get's or a no-ack one, through ``_settle_one``)."""
        self.stats["ack"] += 1
        if entry.sub and entry.seq:
            self.node.link.send(self.leader, CONSUMER_OPS, (_ACK, entry.sub, entry.seq, 0))
        else:
            self._settle_one(entry, Op.ACK)

    def settle(self, op: Settle, entries: list[Any]) -> list[DeadLetter]:
        kind = {Settle.ACK: Op.ACK, Settle.REQUEUE: Op.REQUEUE, Settle.RETURN: Op.REQUEUE,
                Settle.DISCARD: Op.DISCARD}[op]
        for entry in entries:
            self._settle_one(entry, kind)
        return []  # the leader dead-letters (its queue has the DLX settings)

    def _settle_one(self, entry: RemoteEntry, op: Op) -> None:
        if entry.sub == 0:
            if getattr(entry, "leader", self.leader) != self.leader:
                return  # an old leader's basic.get (a failover since): its handle means
                # nothing to the new one, whose log gives the message back redelivered
            op = Op(op + Op.GET_ACK - Op.ACK)
        self.node.settle(self.leader, op, entry.sub, entry.seq or 0)

    def delivery_message(self, entry: Any, on_get: bool = False) -> Message:
        return entry.message  # made by the leader's queue (x-delivery-count, ...)

    # -- calls to the leader ---------------------------------------------------------------
    async def _call(self, method: str, **fields: Any) -> dict[str, Any]:
        return await self._call_raw(method, wire.encode({"vhost": self.vhost,
                                                         "queue": self.name, **fields}))

    async def _call_raw(self, method: str, payload: bytes) -> dict[str, Any]:
        """The leader's answer, its refusal raised as the error this node raises, and
        RabbitMQ's 404 for a leader that is down or stops answering."""
        self.check_available()
        try:
            reply = wire.decode(await self.node.call(self.leader, method, payload))
        except (PeerDown, CallError, TimeoutError, OSError, ValueError) as exc:
            log.info("call %s to %s failed: %s", method, self.leader, exc)
            raise self.absent() from None
        err = reply_error(reply)
        if err is not None:
            raise err
        return reply

    def get_later(self, conn: Any, ch: Any, no_ack: bool) -> None:
        """basic.get: ask the leader, answer get-ok/get-empty when it answers."""
        require(self, "get")
        self.check_available()
        self.node.spawn(self._get(conn, ch, no_ack), conn, ch, (60, 70))

    async def _get(self, conn: Any, ch: Any, no_ack: bool) -> None:
        reply = await self._call(wire.GET, no_ack=no_ack)
        if reply.get("empty"):
            conn.send_method(ch.number, commands.Basic.GetEmpty())
            return
        msg = wire.message(bytes(reply["route"]), bytes(reply["properties"]), bytes(reply["body"]))
        entry = RemoteEntry(msg, int(reply["handle"]), bool(reply["redelivered"]), 0)
        entry.leader = self.leader
        if ch.torn_down or ch.closing:  # the channel closed meanwhile: back to the queue
            if not no_ack:
                self._settle_one(entry, Op.REQUEUE)
            return
        self.counts["messages"] = int(reply.get("count", 0))
        ch.send_get_ok(self, entry, no_ack)

    async def get_remote(self) -> RemoteEntry | None:
        """basic.get for the management API: the leader's next message, left unsettled
        (the caller settles it through ``settle``), or None when the queue is empty."""
        require(self, "get")
        reply = await self._call(wire.GET, no_ack=False)
        if reply.get("empty"):
            return None
        self.counts["messages"] = int(reply.get("count", 0))
        msg = wire.message(bytes(reply["route"]), bytes(reply["properties"]), bytes(reply["body"]))
        entry = RemoteEntry(msg, int(reply["handle"]), bool(reply["redelivered"]), 0)
        entry.leader = self.leader
        return entry

    def purge_later(self, conn: Any, ch: Any, nowait: bool) -> None:
        require(self, "purge")
        self.check_available()

        async def purge() -> None:
            reply = await self._call(wire.PURGE)
            if not nowait:
                conn.send_method(ch.number, commands.Queue.PurgeOk(message_count=int(reply["count"])))

        self.node.spawn(purge(), conn, ch, (50, 30))

    def declare_ok_later(self, conn: Any, ch: Any) -> None:
        """queue.declare of a queue that exists: declare-ok with the leader's counts."""
        self.check_available()

        async def declare_ok() -> None:
            await self.refresh()
            conn.send_method(ch.number, commands.Queue.DeclareOk(
                queue=self.name, message_count=self.message_count,
                consumer_count=self.consumer_count))

        self.node.spawn(declare_ok(), conn, ch, (50, 10))

    def delete_later(self, conn: Any, ch: Any, if_unused: bool, if_empty: bool,
                     nowait: bool) -> None:
        """queue.delete: the leader deletes it (its if-unused/if-empty checks, its count),
        then this node drops its proxy; delete-ok before this channel's basic.cancels."""
        self.check_available()
        vhost = conn.vhost

        async def delete() -> None:
            reply = await self._call(wire.DELETE, if_unused=if_unused, if_empty=if_empty)
            with ch.cancels_after_reply() as cancels:
                vhost.drop_queue(self)
            recorder = getattr(getattr(conn, "broker", None), "recorder", None)
            committed = recorder.pending() if recorder is not None else None
            if committed is not None:  # delete-ok once etcd took the deletion
                await committed
            if not nowait:
                conn.send_method(ch.number, commands.Queue.DeleteOk(
                    message_count=int(reply.get("count", 0))))
            for cancel in cancels:
                conn.send_method(ch.number, cancel)

        self.node.spawn(delete(), conn, ch, (50, 40))

    async def delete_remote(self) -> int:
        """queue.delete for the management API: the leader deletes it (the API checked
        if-unused/if-empty on the counts it showed); the caller drops this proxy."""
        return int((await self._call(wire.DELETE))["count"])

    async def purge_remote(self) -> int:
        """queue.purge for the management API (which awaits it)."""
        require(self, "purge")
        return int((await self._call(wire.PURGE))["count"])

    async def refresh_quietly(self) -> None:
        """The leader's counts if it answers; the last known ones if not."""
        with contextlib.suppress(AMQPError):
            await self.refresh()

    @property
    def state(self) -> str:
        """As the management API shows it: RabbitMQ's "down" while the leader is."""
        return "running" if self.node.is_up(self.leader) else "down"

    async def refresh(self) -> None:
        """The leader's counts (declare-ok, the management API)."""
        reply = await self._call(wire.STATS)
        for key in self.counts:
            self.counts[key] = int(reply.get(key, 0))

    def get(self, no_ack: bool = False) -> QueueEntry | None:
        raise not_found(f"basic.get of queue '{self.name}' in vhost '{self.vhost}' must go "
                        f"to its leader '{self.leader}'")  # handlers call get_later

    def purge(self) -> int:
        raise not_found(f"queue.purge of queue '{self.name}' in vhost '{self.vhost}' must go "
                        f"to its leader '{self.leader}'")  # handlers call purge_later

    # -- lifecycle -----------------------------------------------------------------------
    def touch(self) -> None:
        return None

    def apply_policy(self, name: str | None, definition: Mapping[str, Any] | None) -> None:
        self.policy_name = name

    def delete(self) -> int:
        """Deleted in the definitions: this node's consumers are cancelled; the leader
        drops the messages when it applies the same deletion."""
        for consumer in list(self.consumers):
            self.remove_consumer(consumer)
            consumer.cancelled_by_broker()
        return self.counts["messages"]

    def close(self) -> None:
        return None

    @property
    def message_count(self) -> int:
        return self.counts["messages"]

    @property
    def message_bytes(self) -> int:
        return self.counts["bytes"]

    message_bytes_ready = message_bytes

    @property
    def dead_letter_target(self) -> tuple[str, str | None] | None:
        return None  # dead-lettering happens on the leader

    @property
    def consumer_count(self) -> int:
        return max(self.counts["consumers"], len(self.consumers))

    @property
    def unacked_count(self) -> int:
        return self.counts["unacked"]


__all__ = ["RemoteEntry", "RemoteQueue"]
