"""Where the other nodes' partitions of a spread stream end, for its leader's group views.

A Kafka group of a spread stream is coordinated by the stream's leader, and its committed
offsets of every partition live in the leader's copy of the stream (``partition_spread``).
The leader's copies of the partitions other nodes lead are empty, so describing the group
(``/api/groups``, ``smartbroker groups``: end offsets, lag) or resetting it to ``latest``
from those copies would be wrong. So the leader asks each node holding partitions for
their bounds (first offset kept, next offset) every ``INTERVAL`` seconds, one link call
per node for all its spread streams, and the groups of its copy read those partitions as
``partition_spread.RemotePartition``: their bounds as last told (as current as RabbitMQ's statistics are).
Only a node leading spread streams asks; others answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster import partition_spread
from smartbroker.cluster.etcd_client import stop_tasks

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding

log = logging.getLogger("smartbroker.cluster")
METHOD = "partition-bounds"
INTERVAL = 1.0  # seconds between two asks


def answer(vhosts: dict[str, Any]) -> Any:
    """The call handler: every partition's bounds of the spread streams asked for."""
    def bounds(peer: str, payload: bytes) -> bytes:
        try:
            asked = wire.decode(payload).get("streams") or []
        except (ValueError, TypeError, AttributeError):
            return wire.encode({"code": 406, "text": "malformed partition-bounds call"})
        found = []
        for item in asked if isinstance(asked, list) else []:
            try:
                vhost, name = str(item[0]), str(item[1])
            except (IndexError, TypeError, KeyError):
                continue
            host = vhosts.get(vhost)
            stream = None if host is None else host.queues.get(name)
            if partition_spread.spread_of(stream) is None:
                continue  # not here, or not a spread stream here
            found.append([vhost, name, [[lg.first_offset, lg.next_offset]
                                        for lg in stream.logs]])
        return wire.encode({"code": 0, "streams": found})
    return bounds


class BoundsFollower:
    """The leader's side: asks, every ``interval``, for the bounds it shows."""

    def __init__(self, forwarding: QueueForwarding, interval: float = INTERVAL) -> None:
        self.forwarding = forwarding
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> BoundsFollower:
        self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                            name="partition-bounds")
        return self

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # never a dead task: one line, and the next round
                log.warning("partition bounds not refreshed: %s", exc)

    async def refresh(self) -> None:
        """One call per node holding partitions of the spread streams led here."""
        forwarding = self.forwarding
        asks: dict[str, list[partition_spread.PartitionSpread]] = {}
        for spread in partition_spread.led_by(forwarding):
            for node in spread.owners() - {forwarding.node}:
                if forwarding.is_up(node):
                    asks.setdefault(node, []).append(spread)
        for node, spreads in asks.items():
            payload = wire.encode({"streams": [[s.stream.vhost, s.stream.name] for s in spreads]})
            try:
                reply = wire.decode(await forwarding.call(node, METHOD, payload))
            except Exception as exc:  # down meanwhile, or garbage: next round
                log.debug("partition bounds from %s: %s", node, exc)
                continue
            by_name = {(s.stream.vhost, s.stream.name): s for s in spreads}
            for vhost, name, bounds in reply.get("streams") or []:
                spread = by_name.get((str(vhost), str(name)))
                if spread is not None:
                    spread.learn(node, bounds)


def start(forwarding: QueueForwarding, registry: Any) -> BoundsFollower:
    """Answer the other nodes' asks, and ask them for the streams led here."""
    registry.on_call(METHOD, answer(forwarding.vhosts))
    return BoundsFollower(forwarding).start()


__all__ = ["METHOD", "BoundsFollower", "answer", "start"]
