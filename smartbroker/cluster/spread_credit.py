"""One consumer's prefetch shared by its sources on a spread stream's nodes.

Why: a consumer of a stream whose partitions live on several nodes reads its node's
partitions locally and every other node's through a relay (``partition_spread``), each a
consumer with credit of its own. Left alone, a prefetch of N allowed N unacked deliveries
from each node; on one node (and in RabbitMQ) it is N for the consumer.

``CreditShare`` keeps what the sources hold (unacked deliveries, and credit granted to a
relay's node not used yet) within the prefetch: a source takes only what is left
(``free``), and a relay's node is granted at most a slice (the prefetch over the sources)
at a time, so one node's idle grant pins little. When the credit is back (an ack), the
sources are woken in turn, starting one further each time, so no node's records wait on
another's for ever. A grant its node has not used for ``IDLE`` seconds while nothing is
free is asked back (``Subscriptions.drain``, answered after every delivery its node sent
before): a prefetch of 1 over three nodes moves to the node that has records.

The client's consumer keeps its class's hot path: it only takes ``SharedOrigin``'s
credit checks (the same slots, so the class is swapped in place) while it is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartbroker.broker.consumer import ChannelConsumer

if TYPE_CHECKING:
    from smartbroker.cluster.remote_consumer import Subscriptions

IDLE = 0.05  # seconds an unused grant may pin credit another source may be waiting for
UNLIMITED = 1 << 30  # no prefetch (the channel's global one may still bound it)


class CreditShare:
    """The prefetch of ``origin`` shared by its local reader (when this node holds
    partitions it reads) and ``relays``; ``dispatch`` runs the local reader."""

    def __init__(self, origin: ChannelConsumer, subscriptions: Subscriptions,
                 dispatch: Callable[[], None]) -> None:
        self.origin = origin
        self.relays: list[Any] = []  # PartitionRelay
        self.subscriptions = subscriptions
        self.dispatch = dispatch
        self._turn = 0
        self._seen: dict[int, int] = {}  # id(relay) -> its deliveries at the last look
        self._timer: asyncio.TimerHandle | None = None
        self.stopped = False

    def set_relays(self, relays: list[Any]) -> None:
        self.relays = list(relays)

    # -- what each source holds and may take -----------------------------------------------
    def granted(self, relay: Any) -> int:
        sub = self.subscriptions.by_consumer.get(id(relay))
        return sub.granted if sub is not None else 0

    def budget(self) -> tuple[int, int]:
        """(the credit of all its sources, what they hold): its prefetch, and within its
        channel's global prefetch what the channel's other deliveries leave."""
        origin = self.origin
        unacked = origin.unacked
        granted = 0
        for relay in self.relays:
            unacked += relay.unacked
            granted += self.granted(relay)
        budget = origin.prefetch or UNLIMITED
        ch = origin.channel
        if ch.global_prefetch:
            budget = min(budget, ch.global_prefetch - (ch.unacked_total - unacked))
        return budget, unacked + granted

    def free(self) -> int:
        budget, held = self.budget()
        if held >= budget:
            self.start()  # a grant its node sits on may be what another source waits for
        return budget - held

    def relay_allowance(self, relay: Any) -> int:
        """What ``relay``'s node may have been granted in all (``Subscriptions.top_up``
        grants the difference): a slice of the budget at a time."""
        granted = self.granted(relay)
        budget, held = self.budget()
        if held >= budget:
            self.start()
        part = max(1, budget // (len(self.relays) + 1))
        return granted + max(0, min(part - granted, budget - held))

    # -- turns -----------------------------------------------------------------------------
    def wake(self) -> None:
        """Credit may be back: the parked relays ask for it and the local reader reads,
        in an order that starts one further each time (grants go out at the end of the
        pass, in the order asked; the local reader reads in that pass too)."""
        self.origin.parked = False
        sources: list[Any] = [None, *self.relays]
        turn = self._turn = (self._turn + 1) % len(sources)
        for source in sources[turn:] + sources[:turn]:
            if source is None:
                self.dispatch()
            elif source.parked:
                self.subscriptions.wake(source)

    def start(self) -> None:
        """Look at the grants in ``IDLE`` seconds (only while credit runs short)."""
        if self._timer is None and not self.stopped:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven by hand (unit tests): nothing to look at later
                return
            self._timer = loop.call_later(IDLE, self._look)

    def _look(self) -> None:
        """Nothing free, and a node sits on a grant it has not used since the last look:
        asked back, so a source with records gets it; credit free with relays parked
        (drained before): they ask again."""
        self._timer = None
        budget, held = self.budget()
        for relay in self.relays:
            seen, self._seen[id(relay)] = self._seen.get(id(relay)), relay.delivered
            if held >= budget and seen == relay.delivered and self.granted(relay) > 0:
                self.subscriptions.drain(relay)
        parked = any(relay.parked for relay in self.relays)
        if held < budget and parked:
            self.wake()  # a relay drained earlier asks again
        if held >= budget or parked:
            self.start()  # looks again while credit is short

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_SHARES: dict[int, CreditShare] = {}  # id(origin) -> its share, while it is shared


class SharedOrigin(ChannelConsumer):
    """A client's consumer whose prefetch is shared with relays: its local reader takes
    only its share. Same slots as ``ChannelConsumer``: swapped in by ``share``."""

    __slots__ = ()

    def can_take(self) -> bool:
        return self.credit_left() > 0

    def credit_left(self) -> int:
        n = ChannelConsumer.credit_left(self)
        found = _SHARES.get(id(self))
        return n if found is None else min(n, max(found.free(), 0))


def share(origin: ChannelConsumer, subscriptions: Subscriptions,
          dispatch: Callable[[], None]) -> CreditShare | None:
    """A share for ``origin`` (None: no_ack, nothing to bound). Without a prefetch the
    channel's global one (basic.qos global, now or later) bounds its sources together."""
    if origin.no_ack or type(origin) not in (ChannelConsumer, SharedOrigin):
        return None
    found = _SHARES[id(origin)] = CreditShare(origin, subscriptions, dispatch)
    origin.__class__ = SharedOrigin
    return found


def unshare(origin: Any) -> None:
    found = _SHARES.pop(id(origin), None)
    if found is not None:
        found.stop()
        if type(origin) is SharedOrigin:
            origin.__class__ = ChannelConsumer


__all__ = ["IDLE", "CreditShare", "SharedOrigin", "share", "unshare"]
