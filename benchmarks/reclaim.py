"""Disk benchmark (issue 12): the message store behind one parked message.

Starts its own smartbroker, publishes one persistent message to queue A (never consumed),
then pushes ``--mib`` MiB of persistent messages through queue B with confirms and acks
(pika: publish a batch, drain it). Reports the message store's size on disk (data files)
during and after, and after the reclaimer has caught up.

    .venv/bin/python benchmarks/reclaim.py                     # 200 MiB, 64 MiB segments
    .venv/bin/python benchmarks/reclaim.py --mib 50 --segment-mib 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pika

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from smartbroker.launcher import BrokerProcess  # noqa: E402


def store_mib(data_dir: Path) -> float:
    return sum(p.stat().st_size for p in (data_dir / "messages").glob("*.log")) / (1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=200, help="MiB pushed through queue B")
    ap.add_argument("--size", type=int, default=64 * 1024, help="message body bytes")
    ap.add_argument("--segment-mib", type=float, default=64, help="message store segment size")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--tree", type=Path, default=None,
                    help="run the broker from this checkout (e.g. an older commit, for 'before')")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-reclaim-") as tmp:
        seg = int(args.segment_mib * (1 << 20))
        broker = BrokerProcess(Path(tmp) / "data",
                               env={"SMARTBROKER_MESSAGE_SEGMENT_BYTES": str(seg)},
                               **({"tree": args.tree} if args.tree else {}))
        broker.start()
        try:
            conn = pika.BlockingConnection(pika.URLParameters(broker.url))
            ch = conn.channel()
            ch.confirm_delivery()
            for q in ("A", "B"):
                ch.queue_declare(q, durable=True)
            persistent = pika.BasicProperties(delivery_mode=2)
            ch.basic_publish("", "A", b"parked", persistent)
            body = b"x" * args.size
            total = args.mib * (1 << 20) // args.size
            peak, sent, start = 0.0, 0, time.monotonic()
            while sent < total:
                n = min(args.batch, total - sent)
                for _ in range(n):
                    ch.basic_publish("", "B", body, persistent)
                for _ in range(n):
                    method, _props, _body = ch.basic_get("B")
                    ch.basic_ack(method.delivery_tag)
                sent += n
                peak = max(peak, store_mib(broker.data_dir))
            elapsed = time.monotonic() - start
            at_end = store_mib(broker.data_dir)
            deadline, last, since = time.monotonic() + 60, at_end, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - since < 3:
                time.sleep(0.2)  # settled: no change for 3 s (the reclaimer runs every 0.5 s)
                now = store_mib(broker.data_dir)
                if now != last:
                    last, since = now, time.monotonic()
            settled = store_mib(broker.data_dir)
            left = ch.queue_declare("A", passive=True).method.message_count
            conn.close()
        finally:
            broker.stop()
    print(f"pushed {sent * args.size / (1 << 20):.0f} MiB through B in {elapsed:.1f} s "
          f"({args.size} B messages, {args.segment_mib:g} MiB segments); A holds {left}")
    print(f"message store on disk: peak {peak:.1f} MiB, at the end {at_end:.1f} MiB, "
          f"settled {settled:.1f} MiB")


if __name__ == "__main__":
    main()
