"""The counts of queues other nodes lead, brought here for the management API.

Every ``interval`` seconds (RabbitMQ's collect_statistics_interval), one call per linked
node brings the counts of the queues it leads (``STATS_ALL``), so the queue lists of the
management API are as current on every node as RabbitMQ's statistics are. Split from
``forwarding_node.py``: a timer beside forwarding, never on a message's path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.etcd_client import stop_tasks
from smartbroker.cluster.remote_queue import RemoteQueue

log = logging.getLogger("smartbroker.cluster")


class LeaderCounts:
    """Polls the linked nodes and copies their counts onto this node's ``RemoteQueue``s."""

    def __init__(self, vhosts: dict[str, Any], link: Any) -> None:
        self.vhosts = vhosts
        self.link = link  # forwarding's GuardedLink (``link.link``: the ClusterLink)
        self._task: asyncio.Task[None] | None = None

    def start(self, interval: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(interval))

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            peers = getattr(self.link.link, "peers", None)
            for peer in peers() if peers is not None else ():
                try:
                    reply = wire.decode(await self.link.call(peer, wire.STATS_ALL, b""))
                except Exception as exc:  # down, or answered garbage: next time
                    log.debug("queue counts from %s: %s", peer, exc)
                    continue
                self.apply(peer, reply.get("queues") or [])

    def apply(self, peer: str, rows: list[Any]) -> None:
        """One node's rows ``(vhost, queue, messages, consumers, unacked, bytes)``; rows
        that do not fit, or name a queue it does not lead, are skipped."""
        for row in rows:
            try:
                vhost_name, name, messages, consumers, unacked, size = row
                q = self.vhosts[str(vhost_name)].queues.get(str(name))
            except (KeyError, ValueError, TypeError):
                continue
            if isinstance(q, RemoteQueue) and q.leader == peer:
                q.counts.update(messages=int(messages), consumers=int(consumers),
                                unacked=int(unacked), bytes=int(size))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])
