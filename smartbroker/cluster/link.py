"""``ClusterLink``: this node's links to the other nodes, one TCP connection per pair.

The node whose name sorts lower dials, the other accepts (a connection the rule says the
other side should have dialed is refused), so each pair has exactly one connection and no
duplicate needs breaking; a new connection from a peer that already has one replaces it
(the peer restarted and the old one is not yet seen dead). A dialer reconnects with
exponential backoff while the peer is wanted (``set_peers``, from membership).

For the layers above (placement, forwarding, remote consumers):
- ``await call(peer, method, payload) -> bytes`` and ``on_call(method, handler)``: RPC for
  declare-forward, basic.get, purge, delete, subscribe/cancel. A handler returns bytes (or
  an awaitable of bytes) or raises ``CallError(code, text)``.
- ``send(peer, channel, item) -> bool`` and ``on_messages(channel, handler)``: one-way,
  batched, credit-controlled items (publishes, deliveries, settlements). ``send`` answers
  False when the caller should stop producing for that peer until ``wait_writable``.
- ``hold``/``release``: push back on what a peer sends us on one channel;
  ``on_writable(callback)``: told when a channel that said False may take items again.
- ``on_peer_up``/``on_peer_down``: calls in flight when a link goes down fail with
  ``PeerDown`` first, then the callbacks run (to nack forwarded publishes, cancel remote
  consumers...).
Heartbeats find a peer that stopped answering (a paused process, a cut network).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping

from smartbroker.cluster import link_codec
from smartbroker.cluster.link_codec import ChannelSpec
from smartbroker.cluster.link_peer import (
    LEFT,
    STALLED,
    STOPPING,
    CallError,
    PeerConnection,
    PeerDown,
)
from smartbroker.cluster.link_protocol import Role

__all__ = ["CallError", "ClusterLink", "PeerDown"]

log = logging.getLogger("smartbroker.cluster.link")

CallHandler = Callable[[str, bytes], "bytes | Awaitable[bytes]"]
ChannelHandler = Callable[[str, list[tuple]], None]
PeerCallback = Callable[[str], None]
WritableCallback = Callable[[str, "ChannelSpec | None"], None]  # None: every channel


class ClusterLink:
    def __init__(self, node: str, cluster: str, secret: bytes, *, host: str = "127.0.0.1",
                 port: int = 0, window: int = link_codec.WINDOW, heartbeat: float = 1.0,
                 missed_heartbeats: int = 5, call_timeout: float = 30.0,
                 handshake_timeout: float = 5.0, backoff: tuple[float, float] = (0.05, 2.0),
                 resolve: Callable[[str], tuple[str, int] | None] | None = None) -> None:
        self.node = node
        self.cluster = cluster
        self.secret = secret
        self.host = host
        self.port = port
        self.window = window
        self.heartbeat = heartbeat
        self.missed_heartbeats = missed_heartbeats
        self.call_timeout = call_timeout
        self.handshake_timeout = handshake_timeout
        self.backoff = backoff
        self.resolve = resolve  # a peer's current address (membership), asked at each dial
        self.loop = asyncio.get_running_loop()
        self.channels: dict[int, ChannelSpec] = {}
        self.channel_handlers: dict[int, ChannelHandler] = {}
        self.call_handlers: dict[str, CallHandler] = {}
        self.tasks: set[asyncio.Task] = set()
        self._links: dict[str, PeerConnection] = {}  # ready links by peer name
        self._open: set[PeerConnection] = set()
        self._wanted: dict[str, tuple[str, int]] = {}  # peers to dial: name -> address
        self._dialers: dict[str, asyncio.Task] = {}
        self._up: list[PeerCallback] = []
        self._down: list[PeerCallback] = []
        self._writable: list[WritableCallback] = []
        self._ready_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._logged: dict[str, str] = {}  # the last failure logged per peer (no repeats)
        self._next_id = 0
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.ticked = self.loop.time()  # when the heartbeat tick last ran (``given_up``)
        # whether this node's membership lease may have expired (link_setup: its deadline)
        self.lease_lapsed: Callable[[], bool] = lambda: False
        self._closing = False

    # -- registration --------------------------------------------------------------------
    def on_call(self, method: str, handler: CallHandler) -> None:
        self.call_handlers[method] = handler

    def on_messages(self, spec: ChannelSpec, handler: ChannelHandler) -> None:
        known = self.channels.get(spec.number)
        if known is not None and known != spec:
            raise ValueError(f"channel {spec.number} is already {known.name}")
        self.channels[spec.number] = spec
        self.channel_handlers[spec.number] = handler

    def on_peer_up(self, callback: PeerCallback) -> None:
        self._up.append(callback)

    def on_peer_down(self, callback: PeerCallback) -> None:
        self._down.append(callback)

    def on_writable(self, callback: WritableCallback) -> None:
        """``callback(peer, channel)`` when a channel that answered False to ``send`` (or
        ``writable``) may take items again (``channel`` None: all of them, the socket
        drained): for producers that are not coroutines, e.g. a queue's dispatch."""
        self._writable.append(callback)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> ClusterLink:
        """Listen on the cluster port (``port`` 0 picks a free one, then ``self.port``)."""
        self._server = await self.loop.create_server(
            lambda: PeerConnection(self, Role.ACCEPTOR), self.host, self.port,
            reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = self.loop.call_later(self.heartbeat, self._tick)
        return self

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for task in [*self._dialers.values(), *self.tasks]:
            task.cancel()
        for peer in list(self._open):
            peer.abort(STOPPING)
        finished = [peer.finished for peer in self._open]
        if finished:
            await asyncio.wait(finished, timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    def set_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        """The nodes this one should be linked to (name -> cluster address), from
        membership: dials those it must dial, and drops links to nodes no longer listed."""
        for name in list(self._wanted):
            if name not in peers:
                self.remove_peer(name)
        for name, address in peers.items():
            self.add_peer(name, *address)

    def add_peer(self, name: str, host: str, port: int) -> None:
        if name == self.node:
            return
        self._wanted[name] = (host, port)
        if name < self.node or name in self._dialers:
            return  # it dials us (or we already dial it; the new address is used next)
        task = self.loop.create_task(self._dial(name))
        self._dialers[name] = task
        task.add_done_callback(lambda _t, n=name: self._dialers.pop(n, None))

    def remove_peer(self, name: str) -> None:
        self._wanted.pop(name, None)
        task = self._dialers.pop(name, None)
        if task is not None:
            task.cancel()
        link = self._links.get(name)
        if link is not None:
            link.abort(LEFT)

    # -- the API for the layers above ----------------------------------------------------
    def connected(self, peer: str) -> bool:
        return peer in self._links

    def peers(self) -> list[str]:
        return sorted(self._links)

    def lively(self, peer: str) -> bool:
        """The link to ``peer`` carried something within the last two heartbeats (a
        paused or cut-off peer keeps its link for ``missed_heartbeats`` more)."""
        link = self._links.get(peer)
        return link is not None and (link.received or
                                     self.loop.time() - link.last_heard <= 2 * self.heartbeat)

    async def wait_connected(self, peer: str, timeout: float = 10.0) -> None:
        if peer in self._links:
            return
        waiter = self.loop.create_future()
        self._ready_waiters.setdefault(peer, []).append(waiter)
        await asyncio.wait_for(waiter, timeout)

    async def call(self, peer: str, method: str, payload: bytes = b"",
                   timeout: float | None = None) -> bytes:
        """The peer's answer to ``method``; ``PeerDown`` if the link is (or goes) down,
        ``CallError`` if the peer answered with an error, TimeoutError after ``timeout``."""
        link = self._link(peer)
        self._next_id += 1
        call_id = self._next_id
        future = link.call(call_id, method, payload)
        try:
            return await asyncio.wait_for(future, timeout or self.call_timeout)
        finally:
            link.calls.pop(call_id, None)

    def send(self, peer: str, spec: ChannelSpec, item: tuple) -> bool:
        """Queue ``item`` for ``peer`` on ``spec`` (written at the end of this loop pass,
        batched with the others); False: stop producing until ``wait_writable``."""
        link = self._links.get(peer)  # _link inlined: once per forwarded message
        if link is None:
            raise PeerDown(f"no link to node {peer!r}")
        return link.send(spec, item)

    def writable(self, peer: str, spec: ChannelSpec) -> bool:
        link = self._links.get(peer)  # _link inlined: once per remote delivery
        if link is None:
            raise PeerDown(f"no link to node {peer!r}")
        return link.writable(spec)

    async def wait_writable(self, peer: str, spec: ChannelSpec) -> None:
        await self._link(peer).wait_writable(spec)

    def hold(self, peer: str, spec: ChannelSpec) -> None:
        self._link(peer).conn.hold(spec)

    def release(self, peer: str, spec: ChannelSpec) -> None:
        link = self._links.get(peer)
        if link is not None:
            link.conn.release(spec)
            link.mark()

    @property
    def writes(self) -> int:
        """Writes made on the open links (a test's measure of batching)."""
        return sum(link.writes for link in self._open)

    def _link(self, peer: str) -> PeerConnection:
        link = self._links.get(peer)
        if link is None:
            raise PeerDown(f"no link to node {peer!r}")
        return link

    # -- reports from the connections ----------------------------------------------------
    def opened(self, link: PeerConnection) -> None:
        self._open.add(link)
        self.loop.call_later(self.handshake_timeout, self._check_handshake, link)

    def ready(self, link: PeerConnection) -> None:
        peer = link.peer
        assert peer is not None
        if link.role is Role.DIALER and peer != link.expected:
            link.abort(f"reached node {peer!r}, not {link.expected!r}", warn=True)
            return
        if link.role is Role.DIALER and (peer not in self._wanted or self._closing):
            link.abort(LEFT)  # removed while the handshake was under way
            return
        if link.role is Role.ACCEPTOR and peer > self.node:
            link.abort(f"node {peer!r} dials node {self.node!r}, not the other way",
                       warn=True)
            return
        self._logged.pop(peer, None)
        old = self._links.get(peer)
        if old is not None:
            old.abort("replaced by a new connection from the same node")
            old.fail_calls()
            self._notify(self._down, peer)  # its calls failed: say so before the new one
        self._links[peer] = link
        link.was_up = True
        log.info("cluster link %s node %s is up (%s)",
                 "to" if link.role is Role.DIALER else "from", peer, link.address)
        for waiter in self._ready_waiters.pop(peer, []):
            if not waiter.done():
                waiter.set_result(None)
        self._notify(self._up, peer)

    def lost(self, link: PeerConnection) -> None:
        self._open.discard(link)
        peer = link.peer
        if peer is None or self._links.get(peer) is not link:
            return
        del self._links[peer]
        if not self._closing:
            log.info("cluster link to node %s is down: %s", peer, link.finished.result())
        self._notify(self._down, peer)

    def writable_again(self, link: PeerConnection, spec: ChannelSpec | None) -> None:
        peer = link.peer
        if peer is None or self._links.get(peer) is not link or not self._writable:
            return
        if spec is not None and not link.writable(spec):
            return
        for callback in self._writable:
            try:
                callback(peer, spec)
            except Exception as exc:
                log.warning("writable callback %r failed for %s: %r", callback, peer, exc)
                log.debug("writable callback failure", exc_info=True)

    def loggable(self, link: PeerConnection, reason: str) -> bool:
        """True the first time this failure is seen for this peer (a dialer retrying a
        wrong secret every two seconds logs it once, not every time)."""
        key = link.peer or link.expected
        if key is None:
            return True  # an unnamed client: nothing kept per address (a flood of them)
        if self._logged.get(key) == reason:
            return False
        self._logged[key] = reason
        return True

    def _notify(self, callbacks: Iterable[PeerCallback], peer: str) -> None:
        for callback in callbacks:
            try:
                callback(peer)
            except Exception as exc:
                log.warning("peer callback %r failed for %s: %r", callback, peer, exc)
                log.debug("peer callback failure", exc_info=True)

    def _check_handshake(self, link: PeerConnection) -> None:
        if not link.ready and link.transport is not None:
            link.abort("closed: no handshake within "
                       f"{self.handshake_timeout:g} s", warn=True)

    def given_up(self, link: PeerConnection, quiet: float) -> bool:
        """Whether the peer may have given this node up while ``link`` was silent for
        ``quiet`` seconds, over two heartbeats: this node's membership lease lapsed
        meanwhile (SIGSTOP, a frozen host, a network cut: the others see it leave once
        etcd expires the lease), or its loop stood still longer than the peers'
        heartbeat patience. The peer then
        took back what it had sent on the link (a relayed delivery handed to another
        consumer, flagged), so the link is closed unread, as the peer closed it or is
        about to. ``data_received`` asks this before it reads; ``_tick`` asks it too, as
        it may run first (uvloop runs due timers first when a stopped process resumes)."""
        if quiet <= 2 * self.heartbeat:
            return False
        return self.lease_lapsed() or (link.opened_at < self.ticked and self.loop.time()
                                       - self.ticked > self.heartbeat * self.missed_heartbeats)

    def _tick(self) -> None:
        """Heartbeats: send one on a link that was quiet; close a link that has been
        silent for ``missed_heartbeats`` ticks."""
        self._ticker = self.loop.call_later(self.heartbeat, self._tick)
        now = self.loop.time()
        late = now - self.ticked  # over a heartbeat: this node stood still
        for link in list(self._open):  # what it received came before that
            quiet = late - self.heartbeat if link.received else now - link.last_heard
            if quiet > 2 * self.heartbeat and self.given_up(link, quiet):
                link.abort(STALLED, warn=True)
        self.ticked = now
        for link in list(self._links.values()):
            if not link.ready:  # closed (by the peer, say); connection_lost is on its way
                continue
            if link.received:
                link.received = False
                link.last_heard = now
            elif now - link.last_heard > self.heartbeat * self.missed_heartbeats:
                link.abort(f"closed: nothing heard for {now - link.last_heard:.1f} s",
                           warn=True)
                continue
            if not link.sent:
                link.conn.heartbeat()
                link.flush()
            link.sent = False

    async def _dial(self, peer: str) -> None:
        low, high = self.backoff
        delay = low
        while peer in self._wanted and not self._closing:
            address = self.resolve(peer) if self.resolve is not None else None
            if address is not None and address[1]:
                self._wanted[peer] = address  # it restarted on another port
            host, port = self._wanted[peer]
            try:
                _, link = await asyncio.wait_for(self.loop.create_connection(
                    lambda: PeerConnection(self, Role.DIALER, peer), host, port),
                    self.handshake_timeout)
            except (OSError, TimeoutError) as exc:
                reason = f"cannot connect to {host}:{port}: {exc or 'timeout'}"
                level = logging.WARNING if self._logged.get(peer) != reason else logging.DEBUG
                self._logged[peer] = reason
                log.log(level, "cluster link to %s: %s (retrying)", peer, reason)
            else:
                await asyncio.shield(link.finished)
                if link.was_up:
                    delay = low  # it was up: come back fast
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, high)
