"""chaos.py's clients, asyncio tasks on aiormq: confirming publishers and acking
consumers that hop between random nodes, and the ledger of what each one saw.

- A **publisher** numbers its messages (``p<k>:<seq>``, the AMQP message-id; the body
  adds the attempt), publishes them mandatory, keeps a window of unconfirmed
  publishes, and puts every nacked or returned publish, and every one still unconfirmed when its connection fails or stalls
  (no confirm within ``confirm_timeout``: a paused or cut-off node), back to be
  republished in order on its next connection, to a random node.
- A **consumer** (per queue) acks every delivery after recording it, and moves to
  another random node now and then, or when its connection fails; a stream's
  consumer resumes after the last offset it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiormq
from pamqp.commands import Basic

CONNECT_TIMEOUT = 5.0


@dataclass
class Delivery:
    queue: str
    mid: str
    attempt: int
    redelivered: bool
    consumer: str  # the consumer's connection (k:n@node): FIFO holds within one
    offset: int | None = None  # a stream's
    at: float = 0.0  # time.monotonic() when it came


@dataclass
class Ledger:
    """What the clients did: the checker's only input."""
    sent: dict[str, int] = field(default_factory=dict)  # message id -> publishes of it
    queue_of: dict[str, str] = field(default_factory=dict)
    last_sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # via, when
    confirmed: set[str] = field(default_factory=set)
    confirmed_first_try: set[str] = field(default_factory=set)  # acked on attempt 1
    nacks: int = 0
    returns: int = 0  # mandatory publishes returned (the queue's node was down)
    stalls: int = 0  # connections given up for lack of confirms
    connections: int = 0
    connect_failures: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    last_delivery: float = field(default_factory=time.monotonic)


async def close_quietly(conn: aiormq.Connection | None) -> None:
    if conn is not None and not conn.is_closed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 3)


async def connect(url: str, ledger: Ledger) -> aiormq.Connection | None:
    try:
        conn = await asyncio.wait_for(aiormq.connect(url), CONNECT_TIMEOUT)
    except Exception:  # noqa: BLE001 - a node down, paused or restarting: try another
        ledger.connect_failures += 1
        return None
    ledger.connections += 1
    return conn


class Stalled(Exception):
    """No confirm came within the timeout: the node is paused or cut off."""


@dataclass
class Publisher:
    k: int
    queues: list[str]
    nodes: Callable[[], dict[str, str]]  # name -> URL of the nodes it may connect to now
    ledger: Ledger
    rate: float  # publishes per second
    window: int = 20
    confirm_timeout: float = 12.0
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    resend: deque[str] = field(default_factory=deque)

    def next_message(self) -> str:
        if self.resend:
            return self.resend.popleft()
        self.seq += 1
        mid = f"p{self.k}:{self.seq}"
        self.ledger.queue_of[mid] = self.queues[self.seq % len(self.queues)]
        return mid

    async def run(self, stop: asyncio.Event, finish: asyncio.Event) -> None:
        """Publish until ``stop``; then, until ``finish``, only republish what is still
        unconfirmed (so that the end state has every message settled one way)."""
        while not finish.is_set():
            if stop.is_set() and not self.resend:
                return
            node, url = self.rng.choice(list(self.nodes().items()))
            conn = await connect(url, self.ledger)
            if conn is None:
                await asyncio.sleep(0.3)
                continue
            pending: dict[asyncio.Future, str] = {}
            try:
                await self.session(conn, stop, pending, node)
            except Exception:  # noqa: BLE001 - the connection failed or stalled
                pass
            finally:  # in publish order: republished in it
                for fut, mid in pending.items():
                    if not self.acked(fut, mid):
                        fut.cancel()
                        self.resend.append(mid)
                await close_quietly(conn)

    async def session(self, conn: aiormq.Connection, stop: asyncio.Event,
                      pending: dict[asyncio.Future, str], node: str) -> None:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        until = time.monotonic() + self.rng.uniform(5, 30)  # then hop to another node
        gap = 1.0 / self.rate
        next_at = time.monotonic()
        while time.monotonic() < until and (not stop.is_set() or self.resend):
            mid = self.next_message()
            attempt = self.ledger.sent.get(mid, 0) + 1
            self.ledger.sent[mid] = attempt
            self.ledger.last_sent[mid] = (node, time.monotonic())
            props = Basic.Properties(delivery_mode=2, message_id=mid)
            fut = asyncio.ensure_future(ch.basic_publish(
                f"{mid}:{attempt}".encode(), routing_key=self.ledger.queue_of[mid],
                properties=props, mandatory=True))
            pending[fut] = mid
            while len(pending) >= self.window:
                await self.settle(pending)
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        while pending:
            await self.settle(pending)

    async def settle(self, pending: dict[asyncio.Future, str]) -> None:
        done, _ = await asyncio.wait(list(pending), timeout=self.confirm_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            self.ledger.stalls += 1
            raise Stalled
        failed: BaseException | None = None
        for fut in [f for f in pending if f in done]:  # in publish order
            mid = pending.pop(fut)
            if self.acked(fut, mid):
                continue
            exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
            self.resend.append(mid)
            if isinstance(exc, aiormq.exceptions.PublishError):  # returned: no queue
                self.ledger.returns += 1
            elif isinstance(exc, aiormq.exceptions.DeliveryError) or exc is None:
                self.ledger.nacks += 1
            else:
                failed = exc
        if failed is not None:
            raise failed

    def acked(self, fut: asyncio.Future, mid: str) -> bool:
        """Whether ``fut`` holds an ack (then ``mid`` is recorded confirmed)."""
        if not fut.done() or fut.cancelled() or fut.exception() is not None \
                or not isinstance(fut.result(), Basic.Ack):
            return False
        self.ledger.confirmed.add(mid)
        if self.ledger.sent[mid] == 1:
            self.ledger.confirmed_first_try.add(mid)
        return True


@dataclass
class Consumer:
    k: int
    queue: str
    nodes: Callable[[], dict[str, str]]
    ledger: Ledger
    stream: bool = False
    prefetch: int = 50
    rng: random.Random = field(default_factory=random.Random)
    next_offset: int = 0  # a stream's: where the next connection starts
    sessions: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            node, url = self.rng.choice(list(self.nodes().items()))
            conn = await connect(url, self.ledger)
            if conn is None:
                await asyncio.sleep(0.3)
                continue
            self.sessions += 1
            try:
                await self.session(conn, stop, f"{self.k}:{self.sessions}@{node}")
            except Exception:  # noqa: BLE001 - the connection failed: another node
                await asyncio.sleep(self.rng.uniform(0.2, 0.5))  # its queue may be down
            finally:
                await close_quietly(conn)

    async def session(self, conn: aiormq.Connection, stop: asyncio.Event, tag: str) -> None:
        ch = await conn.channel()
        await ch.basic_qos(prefetch_count=self.prefetch)
        args = {"x-stream-offset": self.next_offset} if self.stream else {}

        async def on_message(msg: aiormq.abc.DeliveredMessage) -> None:
            props = msg.header.properties
            mid, _, attempt = msg.body.decode(errors="replace").rpartition(":")
            offset = None
            if self.stream:
                offset = int((props.headers or {}).get("x-stream-offset", -1))
                self.next_offset = max(self.next_offset, offset + 1)
            self.ledger.deliveries.append(Delivery(
                self.queue, props.message_id or mid, int(attempt or 0),
                bool(msg.delivery.redelivered), tag, offset, time.monotonic()))
            self.ledger.last_delivery = time.monotonic()
            await ch.basic_ack(msg.delivery.delivery_tag)

        ok = await ch.basic_consume(self.queue, on_message, arguments=args)
        until = time.monotonic() + self.rng.uniform(10, 40)
        while time.monotonic() < until and not stop.is_set():
            if conn.is_closed or ok.consumer_tag not in ch.consumers:  # cancelled by the
                raise ConnectionError("closed or cancelled")  # broker: its node went
            await asyncio.sleep(0.2)
