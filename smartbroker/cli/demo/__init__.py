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
import json
import logging
import sys
from dataclasses import asdict
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smartbroker.cli.common import handle_errors
from smartbroker.cli.demo.classic import run_classic
from smartbroker.cli.demo.stream import run_stream
from smartbroker.cli.demo.workload import PARTITIONS, SERVICES, Broker, Outcome

demo_app = typer.Typer(help="Demonstrations with measured numbers.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")


ROWS = (("messages stored", "stored"), ("disk used (data dir)", "disk"),
        ("broker memory growth", "memory"), ("publish throughput", "publish_rate"),
        ("consume throughput (3 services)", "consume_rate"),
        ("late-joining service can read", "late_join"),
        ("replay after a \"bug fix\"", "replay"), ("poison message", "poison"),
        ("a Kafka consumer reads the same data", "kafka"))


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


async def _compare(n: int, url: str | None, api: str | None, kafka: str | None,
                   console: Console) -> tuple[Outcome, Outcome]:
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    results = []
    with Progress(*columns, console=console, transient=False) as progress:
        for run in (run_classic, run_stream):
            broker = Broker(url, api or _default_api(url), kafka=kafka) if url \
                else await asyncio.to_thread(Broker.start)
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
@handle_errors
def compare(
    messages: Annotated[int, typer.Option("--messages", "-n", min=10, help="Order events to publish")] = 20_000,
    url: Annotated[str | None, typer.Option("--url", help="Use this broker instead of starting one")] = None,
    api: Annotated[str | None, typer.Option("--api", help="Its management API [default: port 15672]")] = None,
    kafka: Annotated[str | None, typer.Option(
        "--kafka-bootstrap", help="With --url: its Kafka listener, host:port [default: port 9092]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the results as one JSON line")] = False,
) -> None:
    """Run one workload through classic queues (fanout) and through a partitioned stream
    (consumer groups) and print what each stored, cost and allowed, side by side; then a
    Kafka consumer reads the same stream, at the same offsets."""
    console = Console()
    where = url or "a fresh broker subprocess per setup (temp data dir, free ports)"
    console.print(f"[bold]workload[/]: {messages:,} order events, services {', '.join(SERVICES)}; "
                  f"event {messages // 2} is a poison message for billing; broker: {where}")
    if url and kafka is None:
        kafka = f"{urlsplit(url).hostname}:9092"
    classic, stream = asyncio.run(_compare(messages, url, api, kafka, console))
    render(classic, stream, messages, console)
    if as_json:
        doc = {"messages": messages, "classic": asdict(classic), "stream": asdict(stream)}
        sys.stdout.write(json.dumps(doc) + "\n")
