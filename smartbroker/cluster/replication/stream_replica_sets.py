"""``StreamReplicas``: this node's replicated streams, by (vhost, name), each a
``StreamCopies`` (``stream_replicas.py``): which queues are attached to the replication
core, placement changes and deletes followed, and the placement told at once when this
node wins a partition."""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.replication import stream_offsets
from smartbroker.cluster.replication.stream_replicas import StreamCopies
from smartbroker.cluster.spread_replicas import OFFSETS, replicated
from smartbroker.queues.stream import StreamQueue

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding


class StreamReplicas:
    """This node's replicated streams, by (vhost, name)."""

    def __init__(self, forwarding: QueueForwarding, node: Any) -> None:
        self.forwarding = forwarding
        self.node = forwarding.node
        self.cluster = node  # ClusterNode: its ``replication`` (the core), once built
        self.streams: dict[tuple[str, str], StreamCopies] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # group offsets committed on nodes that do not lead them
        self.offsets_link = stream_offsets.OffsetsLink(self)
        # streams held here while not replicated (``stream_limits``: a first replica added)
        self.served: weakref.WeakSet[StreamQueue] = weakref.WeakSet()

    @property
    def replication(self) -> Any:
        return getattr(self.cluster, "replication", None)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def attach(self, q: Any) -> Any:
        """Called with every queue built (``queue_factory``) and after placement changes:
        a replicated stream's logs of which this node is a member go to the core."""
        if not isinstance(q, StreamQueue) or q.deleted or q.closed:
            return q
        placement = self.forwarding.placement.get(q.vhost, q.name)
        if not replicated(placement):
            if placement is not None:
                self.served.add(q)
            return q
        key = (q.vhost, q.name)
        found = self.streams.get(key)
        if found is not None and found.stream is not q:
            found.close()
            found = None
        if found is None:
            found = self.streams[key] = StreamCopies(self, q)
            host = self.forwarding.vhosts.get(q.vhost)
            if host is not None:  # a vhost added since the start
                self.follow_deletes(host)
        found.open(placement)
        return q

    def placement_changed(self, vhost: str, name: str) -> None:
        host = self.forwarding.vhosts.get(vhost)
        q = None if host is None else host.queues.get(name)
        if q is None or getattr(q, "deleted", False) \
                or self.forwarding.placement.get(vhost, name) is None:
            found = self.streams.pop((vhost, name), None)
            if found is not None:
                found.close(forget=True)
            return
        found = self.streams.get((vhost, name))
        if found is not None and found.stream is not q:  # swapped for a proxy: no copy here
            del self.streams[(vhost, name)]
            found.close()
        self.attach(q)

    def attach_all(self, vhosts: Any) -> None:
        for host in vhosts:
            self.follow_deletes(host)
            for q in list(host.queues.values()):
                self.attach(q)

    def follow_deletes(self, host: Any) -> None:
        """Hear ``host``'s deleted queues (once per vhost)."""
        if self.deleted not in host.on_queue_deleted:
            host.on_queue_deleted.append(self.deleted)

    def deleted(self, q: Any) -> None:
        """A stream was deleted here (its logs closed in the same call, before the core
        could touch them again): its replicas stop, and the records of those this node
        led go from etcd."""
        found = self.streams.pop((q.vhost, q.name), None)
        if found is not None and found.stream is q:
            found.close(forget=True)

    def lead_in_placement(self, vhost: str, name: str, part: int | str) -> None:
        """This node won ``part``: the local placement names it now (the election's
        txn wrote it to etcd; its watch event comes back later)."""
        table = self.forwarding.placement
        placement = table.get(vhost, name)
        if placement is None:
            return
        if part == OFFSETS:
            changed = dataclasses.replace(placement, leader=self.node)
        else:
            leaders = list(placement.partitions)
            if not isinstance(part, int) or not 0 <= part < len(leaders):
                return
            leaders[part] = self.node
            changed = dataclasses.replace(placement, partitions=tuple(leaders))
        if changed != placement:
            table.queues[(vhost, name)] = changed
            self.forwarding.placement_changed(vhost, name)

    def close(self) -> None:
        """Node shutdown: stop replicating (the logs are the streams', closed with them)."""
        streams, self.streams = self.streams, {}
        for found in streams.values():
            found.close()
        for task in self._tasks:
            task.cancel()
