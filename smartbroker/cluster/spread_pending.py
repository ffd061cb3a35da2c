"""Publishes to a stream of several partitions (or a replicated one) known here before its
placement: held until the placement says where each partition lives.

Why: a node learns a queue's definition and its placement from two etcd watches in no
fixed order. A stream built from the definition alone is a stand-in (``StreamQueue`` on
this node, see ``forwarding_rehome``); a publish it took stayed in this node's copy of
its partition even when the placement then put that partition on another node (a spread
stream), read by this node's readers only, or in a stand-in swapped away for the
leader's ``RemoteQueue``. Now the stand-in holds its publishes (``PendingPublishes``),
in order, until ``partition_spread.attach`` sees the placement: they then go where the
placement routes them (this node's partition, or forwarded to its node), before any
later publish. A publisher confirm waits for that (the held result's ``sync``). A
placement that does not come within ``WAIT`` seconds (etcd unreachable) lets them into
this node's copy, as before, as forwarded publishes wait at most that long for their
queue's definition.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.spread_replicas import cluster_size
from smartbroker.queues.base import PublishResult
from smartbroker.queues.stream import StreamQueue
from smartbroker.store.api import StoreUnavailable

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding
    from smartbroker.message import Message

log = logging.getLogger("smartbroker.cluster")
WAIT = 3.0  # seconds a publish waits for its stream's placement (then kept here)

# the stand-ins holding publishes, per node (a process runs several in tests)
_PENDING: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], PendingPublishes]] = \
    weakref.WeakKeyDictionary()


class PendingPublishes:
    """The publishes a stand-in stream took before its placement: its ``publish`` while
    they wait, and the ``sync`` their confirms wait for."""

    def __init__(self, forwarding: QueueForwarding, stand_in: StreamQueue) -> None:
        self.forwarding = forwarding
        self.stand_in = stand_in
        self.held: list[Message] = []
        self.result = PublishResult(True, self)
        self.syncs: list[Any] = []  # the released publishes' own syncs
        self.refused = 0  # released publishes their target refused (or dropped)
        self.released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None

    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        if self._timer is None:  # the first publish waits at most WAIT seconds
            self._timer = asyncio.get_running_loop().call_later(WAIT, self._expired)
        self.held.append(message)
        return self.result

    async def sync(self) -> None:
        """Once released: every held publish's own sync (fsync here, or the confirm of
        the node it was forwarded to); a failure if the target refused one of them (a
        replicated partition whose leader is not reachable yet: a confirm would tell
        the publisher it is stored). Every waiter (channel) asks for all of them: the
        held publishes of several channels are released together."""
        await self.released
        if self.refused:
            raise StoreUnavailable(f"{self.refused} publishes to stream "
                                   f"'{self.stand_in.name}' held for its placement were "
                                   "refused where it routed them")
        for sync in {id(s): s for s in self.syncs}.values():
            await sync.sync()

    def release(self, target: Any) -> None:
        """The placement is known: what was held goes to ``target`` (this name's queue
        object now: the stand-in kept, with a spread's routing or its own, or what
        replaced it), in order; the stand-in publishes on its own again."""
        if self._timer is not None:
            self._timer.cancel()
        attributes = self.stand_in.__dict__
        if attributes.get("publish") == self.publish:  # not replaced by a spread's router
            del attributes["publish"]
        held, self.held = self.held, []
        if getattr(target, "deleted", False) or getattr(target, "closed", False):
            held = []  # deleted meanwhile: dropped, as a publish routed to it then would be
        for message in held:
            result = target.publish(message)
            if not result.accepted:
                self.refused += 1
            elif result.sync is not None:
                self.syncs.append(result.sync)
        if not self.released.done():
            self.released.set_result(None)

    def _expired(self) -> None:
        """No placement in time: kept in this node's copy, as before."""
        pending = _PENDING.get(self.forwarding, {})
        key = (self.stand_in.vhost, self.stand_in.name)
        if pending.get(key) is self:
            del pending[key]
        log.warning("stream '%s' in vhost '%s': no placement within %.0f s, %d publishes "
                    "kept in this node's copy", key[1], key[0], WAIT, len(self.held))
        self.release(self.stand_in)


def hold(forwarding: QueueForwarding, q: Any) -> None:
    """``q`` is a stream of several partitions, or a replicated one (whose partition this
    node may only follow), without a placement yet: its publishes wait for it."""
    if not isinstance(q, StreamQueue) or "publish" in q.__dict__ \
            or (len(q.logs) < 2 and cluster_size(q.arguments) < 2):
        return
    try:
        pending = PendingPublishes(forwarding, q)
    except RuntimeError:  # no running loop (built by hand): nothing to wait with
        return
    _PENDING.setdefault(forwarding, {})[(q.vhost, q.name)] = pending
    q.publish = pending.publish


def release(forwarding: QueueForwarding, q: Any) -> None:
    """``q`` is this name's object under its placement: what a stand-in held goes to it."""
    pending = _PENDING.get(forwarding)
    found = pending.pop((q.vhost, q.name), None) if pending else None
    if found is not None:
        found.release(q)


__all__ = ["WAIT", "PendingPublishes", "hold", "release"]
