"""``smartbroker demo compare``: the same workload through queues and through a log.

An order-events producer and three services (billing, shipping, analytics) run once over
classic queues behind a fanout exchange and once over one partitioned stream with a
consumer group per service. The table shows what each model costs and allows: copies
stored, disk and memory, throughput, what a service joining late can read, what a replay
after a bug fix costs, and where a poison message ends up. Numbers, not slogans: the
trade-offs ``docs/queues-vs-logs.md`` explains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

demo_app = typer.Typer(help="Demonstrations with measured numbers.", no_args_is_help=True)
SERVICES = ("billing", "shipping", "analytics")
PARTITIONS = 3
DELIVERY_LIMIT = 2  # classic: redeliveries before the poison message is dead-lettered
WINDOW = 500  # publishes in flight (confirms awaited per window)
TIMEOUT = 120.0


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")


# -- a broker of our own ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"broker did not listen on port {port} within {timeout}s")


@dataclass
class Broker:
    """Where the workload runs: a subprocess in a temp dir (measurable) or a given URL."""

    url: str
    api: str
    proc: subprocess.Popen[bytes] | None = None
    data_dir: str | None = None

    @classmethod
    def start(cls) -> Broker:
        data_dir = tempfile.mkdtemp(prefix="smartbroker-demo-")
        port, mport = _free_port(), _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--management-port", str(mport), "--data-dir", data_dir, "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port, proc)
            _wait_port(mport, proc)
        except Exception:
            proc.kill()
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        return cls(f"amqp://guest:guest@127.0.0.1:{port}/", f"http://guest:guest@127.0.0.1:{mport}",
                   proc, data_dir)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss(self) -> int | None:
        """Resident memory of the broker process (Linux), to see what messages cost in RAM."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def disk(self, sub: str) -> int | None:
        if self.data_dir is None:
            return None
        total = 0
        for root, _dirs, files in os.walk(os.path.join(self.data_dir, sub)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
        return total

    def api_call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        parts = urlsplit(self.api)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        auth = (parts.username or "guest", parts.password or "guest")
        return httpx.request(method, base + path, json=body, auth=auth, timeout=10)


# -- measurements --------------------------------------------------------------------------


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


def _size(n: int | None) -> str:
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


# -- the classic setup ---------------------------------------------------------------------


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
        out.disk = _size(broker.disk("messages"))
        out.memory = _size(rss1 - rss0 if rss0 is not None and rss1 is not None else None)

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


# -- the stream setup ----------------------------------------------------------------------


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
        out.disk = _size(broker.disk("streams"))
        out.memory = _size(rss1 - rss0 if rss0 is not None and rss1 is not None else None)

        task = progress.add_task("stream: 3 consumer groups read", total=3 * n)
        poison_at_offset: list[tuple[int, int]] = []

        def service(svc: str) -> Callable[[Any], Awaitable[bool]]:
            async def handle(msg: Any) -> bool:
                if svc == "billing" and b'"NaN"' in msg.body:  # log it, skip it, move on
                    poison_at_offset.append((msg.headers["x-stream-partition"],
                                             msg.headers["x-stream-offset"]))
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
        await ch.queue_delete(name)
    finally:
        await conn.close()
    return out


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


# -- the command ---------------------------------------------------------------------------


ROWS = (("messages stored", "stored"), ("disk used (data dir)", "disk"),
        ("broker memory growth", "memory"), ("publish throughput", "publish_rate"),
        ("consume throughput (3 services)", "consume_rate"),
        ("late-joining service can read", "late_join"),
        ("replay after a \"bug fix\"", "replay"), ("poison message", "poison"))


def render(classic: Outcome, stream: Outcome, n: int, console: Console) -> None:
    table = Table(title=f"queues vs logs: {n:,} order events, 3 services", show_lines=True)
    table.add_column("", style="bold")
    table.add_column("classic queues + fanout", ratio=1)
    table.add_column(f"stream ({PARTITIONS} partitions) + consumer groups", ratio=1)
    for label, attr in ROWS:
        a, b = getattr(classic, attr), getattr(stream, attr)
        if isinstance(a, float):
            a, b = f"{a:,.0f} msg/s", f"{b:,.0f} msg/s"
        table.add_row(label, a, b)
    console.print(table)


async def _compare(n: int, url: str | None, api: str | None, console: Console) -> tuple[Outcome, Outcome]:
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    results = []
    with Progress(*columns, console=console, transient=False) as progress:
        for run in (run_classic, run_stream):
            broker = Broker(url, api or _default_api(url)) if url else await asyncio.to_thread(Broker.start)
            try:
                results.append(await run(broker, n, progress))
            finally:
                if not url:
                    await asyncio.to_thread(broker.stop)
    return results[0], results[1]


def _default_api(url: str) -> str:
    parts = urlsplit(url)
    return f"http://{parts.username or 'guest'}:{parts.password or 'guest'}@{parts.hostname}:15672"


@demo_app.command()
def compare(
    messages: Annotated[int, typer.Option("--messages", "-n", min=10, help="Order events to publish")] = 20_000,
    url: Annotated[str | None, typer.Option("--url", help="Use this broker instead of starting one")] = None,
    api: Annotated[str | None, typer.Option("--api", help="Its management API [default: port 15672]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the results as one JSON line")] = False,
) -> None:
    """Run one workload through classic queues (fanout) and through a partitioned stream
    (consumer groups) and print what each stored, cost and allowed, side by side."""
    console = Console()
    where = url or "a fresh broker subprocess per setup (temp data dir, free ports)"
    console.print(f"[bold]workload[/]: {messages:,} order events, services {', '.join(SERVICES)}; "
                  f"event {messages // 2} is a poison message for billing; broker: {where}")
    classic, stream = asyncio.run(_compare(messages, url, api, console))
    render(classic, stream, messages, console)
    if as_json:
        doc = {"messages": messages, "classic": asdict(classic), "stream": asdict(stream)}
        sys.stdout.write(json.dumps(doc) + "\n")
