"""The classic setup: a fanout exchange, a queue per service, a dead-letter queue for
the poison message (``x-delivery-limit``); what it stores and what it cannot replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.progress import Progress

from smartbroker.cli.demo.workload import (
    DELIVERY_LIMIT,
    SERVICES,
    Broker,
    Outcome,
    consume_until,
    publish_all,
    size,
)


async def run_classic(broker: Broker, n: int, progress: Progress) -> Outcome:
    import aio_pika

    out = Outcome()
    poison_at = n // 2
    conn = await aio_pika.connect(broker.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        orders = await ch.declare_exchange("demo.orders", aio_pika.ExchangeType.FANOUT, durable=True)
        dlx = await ch.declare_exchange("demo.dlx", aio_pika.ExchangeType.FANOUT, durable=True)
        dlq = await ch.declare_queue("demo.dlq", durable=True)
        await dlq.bind(dlx)
        for svc in SERVICES:
            q = await ch.declare_queue(f"demo.classic.{svc}", durable=True, arguments={
                "x-dead-letter-exchange": "demo.dlx", "x-delivery-limit": DELIVERY_LIMIT})
            await q.bind(orders)
        rss0 = broker.rss()
        task = progress.add_task("classic: publish to fanout", total=n)
        took = await publish_all(orders, "", n, poison_at, lambda k: progress.advance(task, k))
        out.publish_rate = n / took
        depth = 0
        for svc in SERVICES:
            q = await ch.declare_queue(f"demo.classic.{svc}", passive=True)
            depth += q.declaration_result.message_count
        rss1 = broker.rss()
        out.stored = f"{depth:,} (a copy per queue); 0 once consumed"
        out.disk = size(broker.disk("messages"))
        out.memory = size(rss1 - rss0 if rss0 is not None and rss1 is not None else None)

        task = progress.add_task("classic: 3 services consume", total=3 * n)
        poison_deliveries = 0

        def service(svc: str) -> Callable[[Any], Awaitable[bool]]:
            async def handle(msg: Any) -> bool:
                nonlocal poison_deliveries
                if svc == "billing" and b'"NaN"' in msg.body:
                    poison_deliveries += 1
                    await msg.nack(requeue=True)  # the handler crashed: try again
                    return False
                await msg.ack()
                progress.advance(task)
                return True
            return handle

        start = time.perf_counter()
        chans = [await conn.channel() for _ in SERVICES]
        for c in chans:
            await c.set_qos(prefetch_count=200)
        queues = [await c.get_queue(f"demo.classic.{svc}") for c, svc in zip(chans, SERVICES, strict=True)]
        dead_lettered = lambda: _wait_depth(ch, "demo.dlq", 1)  # noqa: E731
        await asyncio.gather(*(consume_until(q, n - (svc == "billing"), service(svc),
                                             settle=dead_lettered if svc == "billing" else None)
                               for q, svc in zip(queues, SERVICES, strict=True)))
        progress.advance(task, 1)
        out.consume_rate = (3 * n - 1) / (time.perf_counter() - start)
        dead = await _wait_depth(ch, "demo.dlq", 1)

        late = await ch.declare_queue("demo.classic.audit", durable=True)
        await late.bind(orders)
        late = await ch.declare_queue("demo.classic.audit", passive=True)
        out.late_join = (f"{late.declaration_result.message_count:,} of {n:,}: a new queue only "
                         "gets what is published after it binds")
        left = 0
        for svc in SERVICES:
            q = await ch.declare_queue(f"demo.classic.{svc}", passive=True)
            left += q.declaration_result.message_count
        out.replay = (f"impossible: {left:,} of {n:,} events left (acked = deleted); only the "
                      f"{dead} in the DLQ can be redriven; the rest must be republished at the source")
        out.poison = (f"billing nacked it {poison_deliveries}x, then the broker dead-lettered it "
                      f"to demo.dlq (x-delivery-limit {DELIVERY_LIMIT}); gone from billing's queue, "
                      f"{dead} message in the DLQ")
        out.kafka = "none: a classic queue is not a Kafka topic (only streams are)"
        for name in (*(f"demo.classic.{s}" for s in SERVICES), "demo.classic.audit", "demo.dlq"):
            await ch.queue_delete(name)
        await ch.exchange_delete("demo.orders")
        await ch.exchange_delete("demo.dlx")
    finally:
        await conn.close()
    return out


async def _wait_depth(ch: Any, queue: str, at_least: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        q = await ch.declare_queue(queue, passive=True)
        count = q.declaration_result.message_count
        if count >= at_least or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)
