"""Kafka produce and consume through confluent-kafka, with the broker's CPU per phase.

    .venv/bin/python benchmarks/kafka_storage.py                       # 100 B and 1 KiB, 3 reps
    .venv/bin/python benchmarks/kafka_storage.py --tree /tmp/old       # another checkout
    .venv/bin/python benchmarks/kafka_storage.py --tansu PATH/TO/tansu # Tansu, same client

What ``/tmp/kbench.py`` of issue 14 measures (acks=all, linger 5 ms, idempotence off, one
partition, a fresh group assigned at offset 0; consume stops at the first empty poll of
5 s), plus the broker's CPU seconds (utime + stime from ``/proc``) in each phase: on a
shared 2-core machine the throughput moves with the neighbours, the CPU per record much
less. Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smartbroker.launcher import BrokerProcess, free_port, wait_for_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(bootstrap: str, pid: int, n: int, size: int, topic: str) -> dict[str, float]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False})
    value = b"x" * size
    c0, t0 = cpu(pid), time.perf_counter()
    for _ in range(n):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush()
    produce_s, c1 = time.perf_counter() - t0, cpu(pid)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{time.time()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, t1 = 0, time.perf_counter()
    while got < n:
        batch = consumer.consume(10000, 5)
        got += len(batch)
        if not batch:
            break
    consume_s, c2 = time.perf_counter() - t1, cpu(pid)
    consumer.close()
    return {"produce": n / produce_s, "produce_cpu": c1 - c0,
            "consume": got / consume_s, "consumed": got, "consume_cpu": c2 - c1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tree", type=Path, help="run the smartbroker of this checkout")
    ap.add_argument("--tansu", type=Path, help="measure this Tansu binary instead")
    args = ap.parse_args()
    for size in [int(s) for s in args.sizes.split(",")]:
        runs = []
        for rep in range(args.reps):
            tmp = Path(tempfile.mkdtemp(prefix="sb-kafka-storage-"))
            if args.tansu:
                port = free_port()
                url = f"tcp://127.0.0.1:{port}"
                proc = subprocess.Popen([str(args.tansu), "broker", "--listener-url", url,
                                         "--advertised-listener-url", url,
                                         "--storage-engine", "memory://tansu/"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for_port("127.0.0.1", port, proc)
                result = run(f"127.0.0.1:{port}", proc.pid, args.messages, size, f"t{rep}")
                proc.terminate()
                proc.wait()
            else:
                broker = BrokerProcess(tmp / "data", kafka=True, log_level="warning",
                                       tree=args.tree).start()
                try:
                    result = run(broker.kafka_bootstrap, broker.pid, args.messages, size, f"t{rep}")
                finally:
                    broker.stop()
            runs.append(result)
            print(f"size {size} run {rep + 1}: produce {result['produce']:,.0f} msg/s "
                  f"({result['produce_cpu']:.2f} broker CPU-s), consume {result['consume']:,.0f} "
                  f"msg/s ({result['consumed']:.0f} records, {result['consume_cpu']:.2f} CPU-s)",
                  flush=True)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"size {size} median: produce {med['produce']:,.0f} msg/s "
              f"{med['produce_cpu']:.2f} CPU-s, consume {med['consume']:,.0f} msg/s "
              f"{med['consume_cpu']:.2f} CPU-s")


if __name__ == "__main__":
    main()
