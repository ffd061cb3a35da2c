"""Publish rate into a queue whose consumers have all used up their prefetch (issue 12 A).

One socket opens ``--consumers`` consumers (basic.qos prefetch 1, per consumer) on one
queue; one message each leaves every consumer holding one unacked delivery, so none can
take more. Then a second socket publishes ``--count`` transient messages in batches and
asks ``queue.declare(passive)`` until the queue holds them all; the rate is count / time.
A broker that scans its consumers on every publish slows down in proportion to them.

    .venv/bin/python benchmarks/blocked_consumers.py                     # own smartbroker
    .venv/bin/python benchmarks/blocked_consumers.py --url amqp://guest:guest@127.0.0.1:5672/
    .venv/bin/python benchmarks/blocked_consumers.py --consumers 0       # baseline
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from pamqp import body, commands, frame, header

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from memory import BATCH, RawClient  # noqa: E402

from smartbroker.launcher import BrokerProcess  # noqa: E402


def consume_many(client: RawClient, queue: str, consumers: int) -> None:
    """Consumers at prefetch 1 (basic.qos global=false applies to consumers made after it)."""
    client.send(1, commands.Basic.Qos(prefetch_count=1))
    client.expect(commands.Basic.QosOk)
    for i in range(consumers):
        client.send(1, commands.Basic.Consume(queue=queue, consumer_tag=f"c{i}", nowait=True))


def publish(client: RawClient, queue: str, count: int, size: int = 16) -> None:
    one = (frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
           + frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties(delivery_mode=1)), 1)
           + frame.marshal(body.ContentBody(b"x" * size), 1))
    for _ in range(count // BATCH):
        client.sock.sendall(one * BATCH)
    client.sock.sendall(one * (count % BATCH))


def wait_depth(client: RawClient, queue: str, depth: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while client.declare(queue, passive=True) < depth:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue never reached {depth} messages")
        time.sleep(0.005)


def run(port: int, consumers: int, count: int) -> float:
    queue = f"blocked-bench-{uuid.uuid4().hex[:8]}"
    holder, publisher = RawClient(port), RawClient(port)
    holder.send(1, commands.Queue.Declare(queue=queue, auto_delete=True))
    holder.expect(commands.Queue.DeclareOk)
    consume_many(holder, queue, consumers)
    publish(publisher, queue, consumers)  # one unacked message per consumer
    while publisher.declare(queue, passive=True):  # until every consumer holds its message
        time.sleep(0.01)
    started = time.monotonic()
    publish(publisher, queue, count)
    wait_depth(publisher, queue, count)
    elapsed = time.monotonic() - started
    holder.sock.close()
    publisher.sock.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running broker (default: start smartbroker)")
    parser.add_argument("--consumers", type=int, default=5000)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-blocked-") as tmp:
        broker = None
        if args.url:
            port = urlparse(args.url).port or 5672
        else:
            broker = BrokerProcess(Path(tmp) / "data")
            broker.start()
            port = broker.port
        try:
            rates = [run(port, args.consumers, args.count) for _ in range(args.reps)]
        finally:
            if broker is not None:
                broker.kill()
    rates.sort()
    print(f"{args.consumers} blocked consumers, {args.count} publishes: "
          f"median {rates[len(rates) // 2]:,.0f} msg/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
