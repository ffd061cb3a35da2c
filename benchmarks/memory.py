"""Memory benchmark: broker RSS with a million transient messages waiting in one queue.

Starts its own smartbroker (temporary data dir, free ports), reads the idle RSS, then
publishes ``--count`` transient messages of ``--size`` bytes to one queue nobody consumes
and reads VmRSS/VmHWM from /proc once the queue reports them all. The publisher writes
raw AMQP frames (pamqp) in batches over one socket, so the broker, not a client library,
sets the pace; it asks ``queue.declare(passive)`` for the depth at the end.

    .venv/bin/python benchmarks/memory.py                      # 1,000,000 x 16 B
    .venv/bin/python benchmarks/memory.py --count 200000 --size 1024

Issue 7's target: 1,000,000 queued transient 16 B messages in < 250 MB RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from pamqp import body, commands, frame, header
from pamqp import exceptions as pamqp_exceptions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from durability import rss_kib  # noqa: E402
from machine import loadavg, machine_info  # noqa: E402

from smartbroker.launcher import BrokerProcess  # noqa: E402

BATCH = 1000


class RawClient:
    """Just enough AMQP 0-9-1 to publish fast and read a reply: handshake, channel 1."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest", locale="en_US"))
        tune = self.expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        self.send(0, commands.Connection.Open("/"))
        self.expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)

    def send(self, channel: int, value: object) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def expect(self, kind: type) -> object:
        while True:
            try:
                used, _channel, value = frame.unmarshal(self.buf)
            except pamqp_exceptions.UnmarshalingException:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("broker closed the connection") from None
                self.buf += chunk
                continue
            self.buf = self.buf[used:]
            if isinstance(value, kind):
                return value

    def declare(self, queue: str, passive: bool = False) -> int:
        self.send(1, commands.Queue.Declare(queue=queue, passive=passive))
        return self.expect(commands.Queue.DeclareOk).message_count  # type: ignore[attr-defined]

    def publish_many(self, queue: str, count: int, size: int) -> None:
        one = (frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
               + frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties(delivery_mode=1)), 1)
               + frame.marshal(body.ContentBody(b"x" * size), 1))
        batch = one * BATCH
        for _ in range(count // BATCH):
            self.sock.sendall(batch)
        self.sock.sendall(one * (count % BATCH))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--out", type=Path, help="JSON results file "
                        "[benchmarks/results/memory-<date>.json]")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sb-memory-") as tmp:
        broker = BrokerProcess(Path(tmp) / "data")
        broker.start()
        try:
            client = RawClient(broker.port)
            time.sleep(0.5)  # let startup garbage settle before the idle reading
            idle = rss_kib(broker.pid)
            client.declare("memory-bench")
            started = time.monotonic()
            client.publish_many("memory-bench", args.count, args.size)
            depth = client.declare("memory-bench", passive=True)
            fill_s = time.monotonic() - started
            full = rss_kib(broker.pid)
        finally:
            broker.kill()
    per_message = (full["VmRSS"] - idle["VmRSS"]) * 1024 / max(depth, 1)
    result = {
        "name": "memory", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "loadavg": loadavg(), "count": args.count, "size": args.size,
        "queued": depth, "fill_s": round(fill_s, 2), "idle_kib": idle, "queued_kib": full,
        "queued_mb": round(full["VmRSS"] * 1024 / 1e6, 1),
        "bytes_per_message_over_idle": round(per_message, 1),
    }
    print(f"{depth:,} queued x {args.size} B in {fill_s:.1f} s: VmRSS {full['VmRSS']:,} kB "
          f"({result['queued_mb']} MB; idle {idle['VmRSS']:,} kB), peak {full['VmHWM']:,} kB, "
          f"{per_message:.0f} B per message over idle")
    if not args.no_write:
        out = args.out or HERE / "results" / f"memory-{dt.date.today().isoformat()}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0 if depth == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
