"""What ``smartbroker demo compare`` runs and measures: the order-event workload, the
broker it runs on (a subprocess of its own, measurable, or a given URL) and the helpers
both setups share (publish with confirms, consume until a count)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from smartbroker.launcher import BrokerProcess

SERVICES = ("billing", "shipping", "analytics")
PARTITIONS = 3
DELIVERY_LIMIT = 2  # classic: redeliveries before the poison message is dead-lettered
WINDOW = 500  # publishes in flight (confirms awaited per window)
TIMEOUT = 120.0


@dataclass
class Broker:
    """Where the workload runs: a subprocess in a temp dir (measurable) or a given URL."""

    url: str
    api: str
    process: BrokerProcess | None = None
    kafka: str | None = None  # host:port of its Kafka listener; None: no Kafka side

    @classmethod
    def start(cls) -> Broker:
        """A fresh broker on free ports (Kafka listener included) with its data dir and
        log in a temp dir."""
        tmp = Path(tempfile.mkdtemp(prefix="smartbroker-demo-"))
        process = BrokerProcess(tmp / "data", log_level="warning", kafka=True)
        try:
            process.start()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(process.url, process.api, process, process.kafka_bootstrap)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            shutil.rmtree(self.process.data_dir.parent, ignore_errors=True)

    def rss(self) -> int | None:
        """Resident memory of the broker process (Linux), to see what messages cost in RAM."""
        return self.process.rss() if self.process is not None else None

    def disk(self, sub: str) -> int | None:
        if self.process is None:
            return None
        total = 0
        for root, _dirs, files in os.walk(self.process.data_dir / sub):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
        return total

    def api_call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        parts = urlsplit(self.api)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        auth = (parts.username or "guest", parts.password or "guest")
        return httpx.request(method, base + path, json=body, auth=auth, timeout=10)



@dataclass
class Outcome:
    """One column of the table."""

    stored: str = ""
    disk: str = ""
    memory: str = ""
    publish_rate: float = 0.0
    consume_rate: float = 0.0
    late_join: str = ""
    replay: str = ""
    poison: str = ""
    kafka: str = ""


def size(n: int | None) -> str:
    """Bytes for the table; None is a broker we cannot look into."""
    if n is None:
        return "n/a (external broker)"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def order_event(i: int, poison_at: int) -> tuple[str, bytes]:
    """(order key, JSON body) of event ``i``; event ``poison_at`` breaks billing."""
    order = f"order-{i // 4}"
    kind = ("created", "paid", "packed", "shipped")[i % 4]
    doc: dict[str, Any] = {"order": order, "event": kind, "seq": i, "amount": (i * 37) % 500}
    if i == poison_at:
        doc["amount"] = "NaN"  # the bug: billing cannot parse it
    return order, json.dumps(doc).encode()


async def publish_all(exchange: Any, routing_key: str, n: int, poison_at: int,
                      advance: Callable[[int], None]) -> float:
    """Publish n persistent events with confirms; returns seconds taken."""
    import aio_pika

    start = time.perf_counter()
    for lo in range(0, n, WINDOW):
        batch = []
        for i in range(lo, min(n, lo + WINDOW)):
            key, body = order_event(i, poison_at)
            msg = aio_pika.Message(body, headers={"x-message-key": key},
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            batch.append(exchange.publish(msg, routing_key=routing_key))
        await asyncio.gather(*batch)
        advance(len(batch))
    return time.perf_counter() - start


async def consume_until(queue: Any, expected: int, handle: Callable[[Any], Awaitable[bool]],
                        arguments: dict[str, Any] | None = None,
                        settle: Callable[[], Awaitable[Any]] | None = None) -> int:
    """Consume until ``handle`` returned True ``expected`` times (and ``settle()`` returned);
    cancel; return the count."""
    done = asyncio.Event()
    count = 0

    async def on_message(msg: Any) -> None:
        nonlocal count
        if await handle(msg):
            count += 1
            if count >= expected:
                done.set()

    tag = await queue.consume(on_message, arguments=arguments or {})
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT)
        if settle is not None:
            await settle()
    finally:
        await queue.cancel(tag)
    return count
