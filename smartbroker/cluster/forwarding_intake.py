"""The leader's side of forwarded publishes: into the led queue, confirmed after fsync.

Forwarded publishes (``PUBLISH`` items) go straight into the led queue
(``VirtualHost.enqueue``: persisted once, as a local publish), never routed again: the
first node routed them. Their confirms go back on ``CONFIRM`` once every log they were
written to is fsynced, through the same group commit a channel's confirms use
(``MessageStore.request_sync``, with ``PeerConfirms`` as the waiter).

A publish may arrive before this node has the queue: the declaring node answered -ok once
etcd took the definition, and a client may publish through any node before this node's
definitions watch brought it here. Such a publish (and every later one from the same
node, to keep their order) waits here, up to ``WAIT_FOR_QUEUE`` seconds, for the queue to
appear; after that the queue is taken to be gone and the publish is dropped and
confirmed, as a publish to a deleted queue is. One for a queue another node leads now (the
sender's placement is behind a failover) is nacked instead: confirming it would lose it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster import reply_to
from smartbroker.cluster.forwarding_wire import CONFIRM

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding import Link

log = logging.getLogger("smartbroker.cluster")
WAIT_FOR_QUEUE = 3.0  # seconds a publish may wait for its queue's definition
RETRY = 0.02  # seconds between looks


class PeerConfirms:
    """The confirms owed to one peer: the waiter ``MessageStore.request_sync`` calls, as
    a channel is for its client (same marks: everything up to the mark is fsynced)."""

    def __init__(self, peer: str, link: Link) -> None:
        self.peer = peer
        self.link = link
        self.routed_upto = 0
        self.sent = 0
        self.sync_waiting: deque[int] = deque()
        self.nacked: deque[int] = deque()
        # the link it was made for went down: its sync rounds may still end, but its
        # seqs mean nothing to the peer's next forwarder (which starts again at 1), so
        # a late "confirmed up to N" would confirm publishes this node never stored
        self.gone = False

    def sync_mark(self) -> int:
        return self.sync_waiting[-1] if self.sync_waiting else 0

    def synced(self, mark: int) -> None:
        waiting = self.sync_waiting
        while waiting and waiting[0] <= mark:
            waiting.popleft()
        self.flush()

    def sync_failed(self, mark: int) -> None:
        waiting = self.sync_waiting
        while waiting and waiting[0] <= mark:
            self.nacked.append(waiting.popleft())
        self.flush()

    def flush(self) -> None:
        """Send what is settled, in order: nacks one by one, acks as "up to"."""
        if self.gone:
            return  # the peer's forwarder nacked all of it when that link went down
        upto = self.routed_upto
        if self.sync_waiting:
            upto = min(upto, self.sync_waiting[0] - 1)
        if upto <= self.sent:
            return
        nacked = sorted(self.nacked)
        self.nacked = deque(seq for seq in nacked if seq > upto)
        for seq in nacked:
            if seq <= upto:
                self.link.send(self.peer, CONFIRM, (seq, 1))
        self.link.send(self.peer, CONFIRM, (upto, 0))
        self.sent = upto


class PublishIntake:
    """``on_publish`` is the ``PUBLISH`` channel's handler."""

    def __init__(self, vhosts: dict[str, Any], link: Link, loop: Any = None) -> None:
        self.vhosts = vhosts
        self.link = link
        self.loop = loop
        self.confirms: dict[str, PeerConfirms] = {}
        # per peer: publishes waiting for their queue (in order), since when
        self.waiting: dict[str, tuple[list[tuple], float]] = {}

    def on_publish(self, peer: str, items: list[tuple]) -> None:
        held = self.waiting.get(peer)
        if held is not None:  # keep the peer's order: behind what already waits
            held[0].extend(items)
            return
        self._take(peer, items, None)

    def _take(self, peer: str, items: list[tuple], since: float | None) -> None:
        """Enqueue ``items`` in order, then one sync request for all; stop at the first
        whose queue is not here yet (unless it waited long enough) and hold the rest."""
        confirms = self.confirms.get(peer)
        if confirms is None:
            confirms = self.confirms[peer] = PeerConfirms(peer, self.link)
        logs: set[Any] = set()
        store = None
        found: dict[tuple[bytes, bytes], tuple[Any, Any]] = {}  # looked up once per batch
        for i, (seq, vhost_name, queue_name, exchange_rk, properties, body) in enumerate(items):
            key = (vhost_name, queue_name)
            target = found.get(key)
            if target is None:
                vhost = self.vhosts.get(vhost_name.decode(errors="replace"))
                q = None if vhost is None else vhost.queues.get(
                    queue_name.decode(errors="replace"))
                target = found[key] = (vhost, q)
            vhost, q = target
            if q is None and vhost is not None and reply_to.is_reply(queue_name):
                confirms.routed_upto = seq  # a direct reply to a channel here
                reply_to.deliver_forwarded(vhost, exchange_rk, properties, body)
                continue
            if q is None or getattr(q, "leader", None) is not None:
                now = time.monotonic()
                if since is None or now - since < WAIT_FOR_QUEUE:
                    self._hold(peer, items[i:], now if since is None else since)
                    break
                confirms.routed_upto = seq
                if q is not None:  # led by another node (a failover moved it): nacked,
                    confirms.nacked.append(seq)  # the publisher sends it again there
                continue  # None: gone (deleted), dropped and confirmed as RabbitMQ does
            since = None  # the queue came: later unknown ones get a fresh wait
            confirms.routed_upto = seq
            try:
                msg = wire.message(exchange_rk, properties, body)
            except (IndexError, UnicodeDecodeError):
                log.warning("dropped a malformed forwarded publish from %s", peer)
                continue
            accepted, written = vhost.enqueue((q,), msg)
            if not accepted:
                confirms.nacked.append(seq)
            elif written:
                confirms.sync_waiting.append(seq)
                logs.update(written)
                store = vhost.store
        if logs and store is not None:
            store.request_sync(confirms, tuple(logs))
        confirms.flush()

    def _hold(self, peer: str, items: list[tuple], since: float) -> None:
        self.waiting[peer] = (list(items), since)
        self._loop().call_later(RETRY, self._retry, peer)

    def _retry(self, peer: str) -> None:
        held = self.waiting.pop(peer, None)
        if held is not None:
            self._take(peer, held[0], held[1])

    def _loop(self) -> Any:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return self.loop

    def peer_down(self, peer: str) -> None:
        """What it forwarded and we did not take is its to nack (its forwarder does)."""
        confirms = self.confirms.pop(peer, None)
        if confirms is not None:
            confirms.gone = True
        self.waiting.pop(peer, None)
