"""The log setup: one partitioned stream, a consumer group per service; a late service
reads from "first", a fixed service replays by resetting its group's offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
from rich.progress import Progress

from smartbroker.cli.demo.kafka_side import describe, read_over_kafka
from smartbroker.cli.demo.workload import (
    PARTITIONS,
    SERVICES,
    Broker,
    Outcome,
    consume_until,
    publish_all,
    size,
)


async def run_stream(broker: Broker, n: int, progress: Progress) -> Outcome:
    import aio_pika

    out = Outcome()
    poison_at = n // 2
    name = "demo.orders.stream"
    conn = await aio_pika.connect(broker.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(name, durable=True, arguments={
            "x-queue-type": "stream", "x-partitions": PARTITIONS})
        rss0 = broker.rss()
        task = progress.add_task("stream: publish", total=n)
        took = await publish_all(ch.default_exchange, name, n, poison_at,
                                 lambda k: progress.advance(task, k))
        out.publish_rate = n / took
        info = broker.api_call("GET", f"/api/queues/{quote('/', safe='')}/{name}")
        stored = info.json().get("messages", n) if info.status_code == 200 else n
        rss1 = broker.rss()
        out.stored = f"{stored:,} (one copy); all kept after reads (retention decides)"
        out.disk = size(broker.disk("streams"))
        out.memory = size(rss1 - rss0 if rss0 is not None and rss1 is not None else None)

        task = progress.add_task("stream: 3 consumer groups read", total=3 * n)
        poison_at_offset: list[tuple[int, int]] = []
        poison_key: list[str] = []

        def service(svc: str) -> Callable[[Any], Awaitable[bool]]:
            async def handle(msg: Any) -> bool:
                if svc == "billing" and b'"NaN"' in msg.body:  # log it, skip it, move on
                    poison_at_offset.append((msg.headers["x-stream-partition"],
                                             msg.headers["x-stream-offset"]))
                    poison_key.append(str(msg.headers.get("x-message-key")))
                await msg.ack()  # commits the group's offset
                progress.advance(task)
                return True
            return handle

        start = time.perf_counter()
        await asyncio.gather(*(_group_read(conn, name, svc, n, service(svc)) for svc in SERVICES))
        out.consume_rate = 3 * n / (time.perf_counter() - start)

        t = time.perf_counter()
        task = progress.add_task("stream: late service reads from first", total=n)
        late = await _group_read(conn, name, "audit", n, _counting(progress, task))
        out.late_join = (f"{late:,} of {n:,}: a new group starts at \"first\" "
                         f"({time.perf_counter() - t:.1f} s)")

        task = progress.add_task("stream: billing replays after a fix", total=n)
        how = _reset_group(broker, name, "billing")
        group = "billing" if how == "reset" else "billing-v2"
        t = time.perf_counter()
        replayed = await _group_read(conn, name, group, n, _counting(progress, task))
        spent = time.perf_counter() - t
        how_text = ("reset its offsets to earliest (management API)" if how == "reset"
                    else "start a new group billing-v2 from first (no reset API on this broker)")
        out.replay = (f"{replayed:,} events re-read in {spent:.1f} s ({replayed / spent:,.0f}/s): "
                      f"stop billing, {how_text}, restart; nothing republished")
        where = (f"partition {poison_at_offset[0][0]}, offset {poison_at_offset[0][1]}"
                 if poison_at_offset else "?")
        out.poison = (f"stays in the log at {where}; billing logged and acked it, so the group "
                      "committed past it and kept going; after the fix it is re-read by offset")
        out.kafka = await _kafka_read(broker, name, n, progress,
                                      poison_at_offset[0] if poison_at_offset else None,
                                      poison_key[0] if poison_key else None)
        await ch.queue_delete(name)
    finally:
        await conn.close()
    return out


async def _kafka_read(broker: Broker, name: str, n: int, progress: Progress,
                      poison: tuple[int, int] | None, key: str | None) -> str:
    """The same stream read by a Kafka consumer (in a thread: kafka-python blocks)."""
    if broker.kafka is None:
        return "not shown: no Kafka listener given (--kafka-bootstrap)"
    task = progress.add_task("stream: a Kafka consumer reads it too", total=1)
    read = await asyncio.to_thread(read_over_kafka, broker.kafka, name, n)
    progress.advance(task)
    return describe(read, n, poison, key)


def _counting(progress: Progress, task: Any) -> Callable[[Any], Awaitable[bool]]:
    async def handle(msg: Any) -> bool:
        await msg.ack()
        progress.advance(task)
        return True
    return handle


async def _group_read(conn: Any, queue: str, group: str, n: int,
                      handle: Callable[[Any], Awaitable[bool]]) -> int:
    """One member of ``group`` reads n events (from "first" if the group is new); its
    channel is closed afterwards so the group has no active member."""
    ch = await conn.channel()
    try:
        await ch.set_qos(prefetch_count=500)
        q = await ch.get_queue(queue, ensure=False)
        return await consume_until(q, n, handle, {"x-consumer-group": group,
                                                  "x-stream-offset": "first"})
    finally:
        await ch.close()


def _reset_group(broker: Broker, queue: str, group: str) -> str:
    """Rewind a group to the earliest offsets via the management API ("reset"), else
    report that a fresh group is the way ("new-group")."""
    path = f"/api/groups/{quote('/', safe='')}/{quote(queue, safe='')}/{quote(group, safe='')}/reset"
    deadline = time.monotonic() + 10
    while True:
        try:
            resp = broker.api_call("POST", path, {"to": "earliest"})
        except httpx.HTTPError:
            return "new-group"
        if resp.status_code == 200:
            return "reset"
        if resp.status_code != 409 or time.monotonic() > deadline:  # 409: member still leaving
            return "new-group"
        time.sleep(0.05)
