"""A queue's object on this node follows its placement: the queue itself where this node
leads it, a ``RemoteQueue`` everywhere else.

Why objects change: a node learns a queue and its placement from two etcd watches
(definitions, placement) in no fixed order, and at start it restores every queue of the
definitions before forwarding is attached. ``rehome`` swaps the object in place: same
name, same bindings (moved binding by binding, without recording anything: the
definitions did not change), the old object's consumers cancelled as when a queue's home
moves in RabbitMQ. A queue swapped away from this node was never led here (placements
never move in this version): what its stand-in took in meanwhile is forwarded to the
leader. A replicated quorum queue's leader does move (failover): its consumers carry on
with the new object (or resubscribe at the new leader), and nothing is forwarded, since
the new leader rebuilt the queue from its copy of the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.broker.exchange import Binding
from smartbroker.cluster import partition_spread
from smartbroker.cluster.remote_consumer import carries_on
from smartbroker.cluster.remote_queue import RemoteQueue
from smartbroker.queues import quorum_replicated
from smartbroker.queues.base import Queue, QueueSpec

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding


def wanted_remote(forwarding: QueueForwarding, q: Queue) -> bool:
    """Whether ``q``'s object here should be a ``RemoteQueue`` (placed on another node);
    an exclusive queue always lives where it was declared (another node's stays its
    proxy even under a stray placement naming this node: a declare that lost the race)."""
    if q.exclusive_owner is not None:
        return isinstance(q, RemoteQueue)
    leader = forwarding.placement.leader(q.vhost, q.name)
    if leader is None:  # unknown (not yet, or its record just went): as it is
        return isinstance(q, RemoteQueue)
    if partition_spread.spread(forwarding.placement.get(q.vhost, q.name)):
        return False  # a stream spread over the nodes is held on every node
    return leader != forwarding.node and q.exclusive_owner is None


def rehome(forwarding: QueueForwarding, vhost: Any, name: str) -> Queue | None:
    """Make ``vhost``'s queue ``name`` the right kind of object; returns the new object,
    or None when nothing had to change."""
    old = vhost.queues.get(name)
    if old is None:
        return None
    remote = wanted_remote(forwarding, old)
    if remote == isinstance(old, RemoteQueue):
        if remote and isinstance(old, RemoteQueue):
            leader = forwarding.placement.leader(vhost.name, name) or old.leader
            if leader != old.leader:
                old.leader = leader
                if carries_on(forwarding, old):  # a replicated queue's failover
                    forwarding.subscriptions.resubscribe(old)
        partition_spread.attach(forwarding, old)  # a kept stream learns its spread
        return None
    return swap(forwarding, vhost, old)


def swap(forwarding: QueueForwarding, vhost: Any, old: Queue) -> Queue:
    """Replace ``old`` by a new object built for its placement (``rehome``; a replicated
    quorum queue that leads again after following is rebuilt from its log this way)."""
    name = old.name
    spec = QueueSpec(name, vhost.name, old.durable, False, old.auto_delete,
                     dict(old.arguments), None, None)
    new = forwarding.queue_factory(spec, vhost, vhost.storage)
    new.policy_name = old.policy_name
    default = vhost.exchanges[""].router
    default.unbind(old, name, {})
    vhost.queues[name] = new
    default.bind(new, name, {})
    for binding in list(old.bindings):
        source = binding.source
        if source.remove_binding(binding) is None:
            continue
        moved = Binding(source, new, binding.routing_key, dict(binding.arguments))
        if source.add_binding(moved):
            new.bindings.add(moved)
    old.bindings.clear()
    replicated = carries_on(forwarding, old)
    for consumer in list(old.consumers):
        old.remove_consumer(consumer)
        if not replicated:
            consumer.cancelled_by_broker()
        elif hasattr(consumer, "peer"):  # another node's (a RelayConsumer): it resubscribes
            forwarding.leader.consumers.pop((consumer.peer, consumer.sub), None)
            consumer.cancelled = True
        else:  # a client's here carries on with the queue's new object
            consumer.queue = new
            new.add_consumer(consumer)
    if getattr(old, "led", False):  # its log holds its messages: the new leader has them
        quorum_replicated.release(old)  # type: ignore[arg-type]
        old.delete()  # its settlements are no longer written; its timers stop
    elif isinstance(new, RemoteQueue) and old.capabilities.supports_get:
        moved_messages(old, new)
        old.delete()  # empty now: its timers (x-expires, TTL) stop with it
    else:
        old.close()  # a stream's stand-in keeps its files; a proxy has nothing to stop
    return new


def moved_messages(old: Queue, new: Queue) -> int:
    """What a stand-in took in before its placement came goes on to the leader (a
    stream's stand-in keeps its records: it was never read from)."""
    moved = 0
    while old.message_count:
        entry = old.get(no_ack=True)
        if entry is None:
            break
        new.publish(entry.message)
        moved += 1
    return moved
