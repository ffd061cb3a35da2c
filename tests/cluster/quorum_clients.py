"""Clients of the quorum failover tests (test_replication_quorum.py): confirming and
pipelining publishers through one node, a draining consumer, the confirmed-versus-got
check, and a consumer holding an unacked delivery across a failover."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import aiormq
import pika
from pamqp.commands import Basic

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.replication import LogName, election
from smartbroker.cluster.replication.records import ISR, IsrRecord
from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import (
    poll,
)

QUIET = 10.0  # seconds without a delivery that end a drain


def connect(node: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url))


def _get(ch: Any, queue: str, ack: bool = False) -> Any:
    method, props, body = ch.basic_get(queue, auto_ack=ack)
    return None if method is None else (method, props, body)


class Publisher(threading.Thread):
    """Numbered publishes with confirms, one at a time, republishing what is nacked or
    never confirmed (as a client library's confirm-and-retry loop does)."""

    def __init__(self, node: BrokerProcess, queue: str) -> None:
        super().__init__(daemon=True)
        self.node, self.queue = node, queue
        self.confirmed: list[int] = []
        self.confirmed_at: list[float] = []
        self.unconfirmed: set[int] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _run(self) -> None:
        conn = connect(self.node)
        ch = conn.channel()
        ch.confirm_delivery()
        n = 0
        while not self.stop.is_set():
            try:
                ch.basic_publish("", self.queue, str(n).encode(),
                                 pika.BasicProperties(delivery_mode=2), mandatory=False)
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                self.unconfirmed.add(n)
                time.sleep(0.05)
                continue  # the same number again
            self.confirmed.append(n)
            self.confirmed_at.append(time.monotonic())
            n += 1
        conn.close()


class PipelinedPublisher(threading.Thread):
    """Confirms pipelined (aiormq, up to ``WINDOW`` outstanding), each publish a new
    number: a nacked one is not sent again (so order and duplicates are simple to check)."""

    WINDOW = 50

    def __init__(self, node: BrokerProcess, queue: str) -> None:
        super().__init__(daemon=True)
        self.node, self.queue = node, queue
        self.confirmed: list[int] = []
        self.unconfirmed: set[int] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def _run(self) -> None:
        conn = await aiormq.connect(self.node.url)
        ch = await conn.channel(publisher_confirms=True)
        window = asyncio.Semaphore(self.WINDOW)
        tasks: set[asyncio.Task[None]] = set()

        async def one(n: int) -> None:
            try:
                confirm = await ch.basic_publish(str(n).encode(), routing_key=self.queue,
                                                 properties=Basic.Properties(delivery_mode=2))
                if isinstance(confirm, Basic.Ack):
                    self.confirmed.append(n)
                else:
                    self.unconfirmed.add(n)
            except aiormq.exceptions.AMQPError:
                self.unconfirmed.add(n)
            finally:
                window.release()

        n = 0
        while not self.stop.is_set():
            await window.acquire()
            task = asyncio.ensure_future(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self.unconfirmed.update(range(n))
        self.unconfirmed.difference_update(self.confirmed)
        await conn.close()


def drain(node: BrokerProcess, queue: str, expect: int) -> list[tuple[int, bool]]:
    """(number, redelivered) of every message left, consumed and acked through ``node``:
    until ``expect`` came and nothing more for a while, or nothing at all for ``QUIET``
    seconds (a busy machine drains slowly: no fixed deadline)."""
    got: list[tuple[int, bool]] = []
    conn = connect(node)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append((int(body), method.redelivered))
            if len(got) % 100 == 0:
                ch.basic_ack(method.delivery_tag, multiple=True)

        ch.basic_consume(queue, on_message)
        last_news = time.monotonic()
        idle = 0
        while time.monotonic() - last_news < QUIET:
            before = len(got)
            conn.process_data_events(time_limit=0.3)
            if len(got) == before:
                idle += 1
            else:
                idle, last_news = 0, time.monotonic()
            if len(got) >= expect and idle >= 3:
                break
        ch.basic_ack(0, multiple=True)
    finally:
        conn.close()
    return got


def check_confirmed(publisher: Publisher | PipelinedPublisher, got: list[int]) -> None:
    """Every confirmed number is there, in publishing order (numbers rise as they are
    published); duplicates only of numbers that were once unconfirmed."""
    first: dict[int, int] = {}
    for i, n in enumerate(got):
        first.setdefault(n, i)
    missing = [n for n in publisher.confirmed if n not in first]
    assert not missing, (f"confirmed but lost: {len(missing)} of {len(publisher.confirmed)}, "
                         f"first {missing[:20]}; {len(got)} consumed, up to {max(got, default=-1)}")
    positions = [first[n] for n in sorted(publisher.confirmed)]
    assert positions == sorted(positions), "confirmed messages out of publishing order"
    dupes = {n for n in first if got.count(n) > 1}
    assert dupes <= publisher.unconfirmed, f"duplicates of confirmed: {dupes - publisher.unconfirmed}"


class HeldConsumer:
    """A consumer (prefetch 1) on ``node`` holding its first delivery unacked."""

    def __init__(self, node: BrokerProcess, queue: str, feed: Any) -> None:
        self.conn = connect(node)
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=1)
        self.seen: list[tuple[bytes, bool, int]] = []
        self.ch.basic_consume(queue, lambda c, m, p, b: self.seen.append(
            (b, m.redelivered, m.delivery_tag)))
        feed.basic_publish("", queue, b"held")
        self.wait(b"held", False)

    def wait(self, body: bytes, redelivered: bool) -> int:
        """The delivery tag of ``body`` once it came (``redelivered`` as given)."""
        def came() -> int | None:
            self.conn.process_data_events(time_limit=0.05)
            return next((t for b, r, t in self.seen if b == body and r == redelivered), None)

        return poll(came, f"{body!r} delivered (redelivered={redelivered})")


def in_sync(node: BrokerProcess, queue: str) -> tuple[str, ...]:
    """The queue's ISR as etcd holds it (``replica/isr/<log id>``)."""
    async def read() -> tuple[str, ...]:
        async with EtcdClient(node.etcd, node.cluster_name) as etcd:
            found = await election.read(etcd, LogName("/", queue), ISR)
        record = None if found.value is None else IsrRecord.decode(found.value)
        return () if record is None else record.isr
    return asyncio.run(read())
