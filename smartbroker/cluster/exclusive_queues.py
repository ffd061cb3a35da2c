"""Exclusive queues are cluster-wide definitions, as in RabbitMQ.

RabbitMQ's exclusive queue is known on every node: a connection anywhere but its owner's
is refused with 405 RESOURCE_LOCKED (declare, consume, get, purge, delete, bind), its name
is taken, and publishes from any node reach it. Here the owning node writes it to etcd on
its membership lease, marked with its node and connection
(``definitions_keys.ExclusiveQueueDef``, ``EtcdDefinitionStore.save_exclusive_queue``);
the other nodes hold a ``RemoteQueue`` for it whose ``exclusive_owner`` is a
``RemoteOwner``, a stand-in for a connection of another node that no local connection
ever is: every operation but a publish is the vhost's 405, publishes are forwarded to
the owner's node. It goes when its connection closes (the recorder deletes it) or its
node dies (the lease). A restarted node deletes what its previous process left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from smartbroker.cluster import definitions_keys as K
from smartbroker.cluster.definitions_etcd import DefinitionChange
from smartbroker.cluster.definitions_keys import ExclusiveQueueDef
from smartbroker.cluster.etcd_client import EtcdUnavailable
from smartbroker.cluster.remote_queue import RemoteQueue
from smartbroker.queues.base import QueueSpec
from smartbroker.queues.types import queue_type

if TYPE_CHECKING:
    from smartbroker.cluster.definitions_etcd import EtcdDefinitionStore
    from smartbroker.cluster.definitions_sync import DefinitionsSync
    from smartbroker.cluster.forwarding_node import QueueForwarding

log = logging.getLogger("smartbroker.cluster")


class RemoteOwner:
    """The connection (on another node) owning an exclusive queue; ``name`` and ``peer``
    are what the management API shows as the queue's ``owner_pid_details``."""

    __slots__ = ("node", "name", "peer")

    def __init__(self, node: str, connection: str) -> None:
        self.node = node
        self.name = connection
        self.peer = connection.split(" -> ", 1)[0]


def remote_owner(record: Any) -> RemoteOwner | None:
    """The owner of another node's exclusive queue ``record`` (None: not exclusive)."""
    if not isinstance(record, ExclusiveQueueDef):
        return None
    return RemoteOwner(record.exclusive_node, record.exclusive_connection)


def locked_remote(forwarding: QueueForwarding, spec: QueueSpec) -> RemoteQueue | None:
    """The proxy of another node's exclusive queue (``spec.owner`` a ``RemoteOwner``):
    publishes go to its node, everything else is refused by the vhost's 405. None when
    ``spec`` is an exclusive declare of this node's own."""
    owner = spec.owner
    if not isinstance(owner, RemoteOwner) or owner.node == forwarding.node:
        return None
    kind = queue_type(spec.arguments)
    q = RemoteQueue(spec.name, spec.vhost, owner.node, forwarding, durable=spec.durable,
                    auto_delete=spec.auto_delete, arguments=spec.arguments,
                    capabilities=dataclasses.replace(kind.capabilities, offset_log=False,
                                                     supports_browse=False),
                    type_name=getattr(kind, "type_name", "classic"))
    q.exclusive_owner = owner  # type: ignore[assignment]
    return q


def apply_at_start(store: EtcdDefinitionStore, sync: DefinitionsSync, node: str) -> None:
    """At start (restore leaves exclusive queues out): the other nodes' exclusive queues
    and their bindings are applied as watch events would be; this node's own, left by
    its previous process (killed, restarted before its lease expired), are deleted:
    their connections are gone."""
    queues, bindings = store.exclusive_definitions()
    stale = {(q.vhost, q.name) for q in queues if q.exclusive_node == node}
    for q in queues:
        if (q.vhost, q.name) in stale:
            store.delete_queue(q.vhost, q.name)  # and the bindings to it
        else:
            sync.received(DefinitionChange("queues", None, q))
    for b in bindings:
        if (b.vhost, b.destination) not in stale:
            sync.received(DefinitionChange("bindings", None, b))
    if stale:
        log.info("deleted %d exclusive queue(s) of this node's previous process", len(stale))


RELEASE_WAIT = 3.0  # seconds a 405 waits for a deletion etcd already holds to arrive here
_CHECK = 0.003


async def released(etcd: Any, vhosts: dict[str, Any], vhost: str, name: str) -> None:
    """Before a 405 for another node's exclusive queue: if etcd no longer holds it (its
    connection closed a moment ago, its close-ok already sent), wait until this node
    applied the deletion, so the method runs again and finds the name free. A lock etcd
    still holds returns at once (the 405 stands). One etcd read, on the 405 path only."""
    host = vhosts.get(vhost)
    q = host.queues.get(name) if host is not None else None
    if q is None or not isinstance(q.exclusive_owner, RemoteOwner):
        return
    key = K.key("queues", vhost, name)
    try:
        found = await etcd.get(key)
        record = K.decode(key, found.value)[1] if found is not None else None
    except (EtcdUnavailable, ValueError) as exc:  # the 405 as it was
        log.info("cannot check etcd before a 405: %s", exc)
        return
    owner = q.exclusive_owner
    if remote_owner(record) is not None and (record.exclusive_node, record.exclusive_connection) \
            == (owner.node, owner.name):
        return  # still locked
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_WAIT
    while host.queues.get(name) is q and loop.time() < deadline:
        await asyncio.sleep(_CHECK)

