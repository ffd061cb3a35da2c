"""Publishes to a queue another node leads: sent to the leader in order, confirmed once
the leader confirmed.

One ``Forwarder`` per leader node. ``forward`` hands the message to the link (which
batches: one write per loop pass, however many publishes) and numbers it. The
forwarder is also the "log" a confirm waits for: ``RemoteQueue.publish`` returns it as
the ``PublishResult.sync`` of the publish, and the group commit that fsyncs the local
logs awaits ``sync()`` beside them (``MessageStore.request_sync``), so a publisher
confirm leaves only after the leader confirmed everything forwarded so far, with no
new path in the channel's confirm code.

When the link to the leader is out of credit (the leader is slower than the publishers),
``full`` is called: the node stops reading its publishing connections until the link
drains, as RabbitMQ's credit flow holds a publisher back, so nothing buffers without bound.

A queue that may refuse publishes (``x-overflow``/policy ``overflow`` reject-publish)
gets a ``Claim`` per forwarded publish instead of the shared result: the publish's sync
request binds it to its publisher (``MessageStore.claims``), so the leader's nack of that
publish nacks it alone (``Channel.nack_waiting``), not the publishes waiting on the same
group-commit round. Any other nack (a policy this node has not seen yet), or a leader
that went down with publishes unconfirmed, makes ``sync()`` fail, which nacks the
publishes that waited on that round (the publisher may retry), as a failed fsync does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.forwarding_wire import PUBLISH
from smartbroker.queues.base import PublishResult
from smartbroker.store.api import StoreUnavailable

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding import Link
    from smartbroker.message import Message


class Forwarder:
    """``full``: called when the link to the leader is out of credit (the caller stops
    reading publishers until the link drains)."""

    def __init__(self, peer: str, link: Link, full: Callable[[str], None] | None = None) -> None:
        self.peer = peer
        self.link = link
        self.full = full
        self.seq = 0
        self.confirmed = 0  # every seq up to here is settled by the leader
        self.nacked_upto = 0  # the highest seq the leader nacked (or lost)
        self.checked = 0  # nacks up to here were already reported by a sync()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.result = PublishResult(True, self)  # what a forwarded publish returns
        # seq -> (nack, mark): claimed publishes the leader has not settled yet
        self.claimed: dict[int, tuple[Callable[[int], None], int]] = {}

    def forward(self, vhost: str | bytes, queue: str | bytes, msg: Message) -> None:
        """Send ``msg`` to the leader's ``queue`` (names as UTF-8 bytes, or str)."""
        self.seq += 1
        if not self.link.send(self.peer, PUBLISH, (self.seq, vhost, queue, msg.exchange_rk_ss,
                                                   msg.header_payload, msg.body)) \
                and self.full is not None:
            self.full(self.peer)

    def claim(self, claims: set[Any] | None) -> PublishResult:
        """The result of the publish just forwarded, with a ``Claim`` of its own for its
        publisher to bind (``claims``: its vhost's ``MessageStore.claims``)."""
        claim = Claim(self, self.seq)
        if claims is not None:
            if not claims:  # a publish without confirms never binds its claim
                asyncio.get_running_loop().call_soon(claims.clear)
            claims.add(claim)
        return PublishResult(True, claim)

    def sync(self) -> Awaitable[None]:
        """Return once the leader settled every publish forwarded so far; raise
        ``StoreUnavailable`` if it refused or lost one of them. "So far" is taken NOW,
        when the group-commit round starts (right after it took its publishers' marks),
        not when the coroutine first runs: a publish forwarded in between belongs to the
        next round, and must be that round's to nack if the leader loses it."""
        return self._settled(self.seq)

    async def _settled(self, target: int) -> None:
        if self.confirmed < target:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((target, future))
            await future
        if self.nacked_upto > self.checked:
            # up to this round's own publishes: a nack (or a loss) of later ones is the
            # next round's to report, else those publishes would be confirmed
            self.checked = min(self.nacked_upto, target)
            raise StoreUnavailable(f"node {self.peer} refused or lost a forwarded publish")

    def on_confirm(self, seq: int, nack: bool) -> None:
        claimed = self.claimed
        if nack:
            owner = claimed.pop(seq, None) if claimed else None
            if owner is not None:
                owner[0](owner[1])  # that publish alone
            else:
                self.nacked_upto = max(self.nacked_upto, seq)
            return
        if seq <= self.confirmed:
            return
        self.confirmed = seq
        while claimed and (first := next(iter(claimed))) <= seq:
            del claimed[first]
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            _, future = waiters.pop(0)
            if not future.done():
                future.set_result(None)

    def peer_down(self) -> None:
        """The leader is gone: whatever it had not confirmed is lost; say so."""
        claimed, self.claimed = self.claimed, {}
        for nack, mark in claimed.values():
            nack(mark)
        if self.confirmed < self.seq:
            self.nacked_upto = self.seq
        self.on_confirm(self.seq, False)


class Claim:
    """One forwarded publish a leader may refuse: awaited as its sync (the forwarder's),
    and bound by its sync request to the publisher to nack alone if the leader refuses."""

    __slots__ = ("forwarder", "seq")

    def __init__(self, forwarder: Forwarder, seq: int) -> None:
        self.forwarder = forwarder
        self.seq = seq

    def bind(self, nack: Callable[[int], None], mark: int) -> None:
        if self.seq > self.forwarder.confirmed:
            self.forwarder.claimed[self.seq] = (nack, mark)

    def sync(self) -> Awaitable[None]:
        return self.forwarder.sync()
