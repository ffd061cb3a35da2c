#!/usr/bin/env python3
"""Stream-queue benchmark for smartbroker: publish, replay, and consumer-group rebalance pause.

    .venv/bin/python benchmarks/streams.py                 # defaults, ~1-2 minutes
    .venv/bin/python benchmarks/streams.py --messages 20000 --rebalances 4 --reps 1

Starts its own smartbroker subprocess on free ports with a temporary data directory and
measures, with the same 1 KiB persistent messages throughout:

1. **publish**: msg/s into a stream (1 partition and 8 partitions) vs a classic durable
   queue, publisher confirms with a window of ``--window`` unconfirmed messages, from
   ``--publishers`` processes (aio-pika). The rate counts until the last confirm.
2. **consume**: msg/s replaying the stream from ``x-stream-offset: first`` with prefetch
   1000 (acks with ``multiple=true`` every 100), end to end until the last message.
3. **rebalance pause**: a stream with 8 partitions, a consumer group of 4 members, a
   producer at a fixed ``--rate``. A fifth member repeatedly joins and leaves. For each
   join/leave, the pause of a stable member is its longest gap between two deliveries in
   the window around the event; we take the worst stable member per event and report the
   median over events, for ``x-rebalance: cooperative`` and ``eager``. Also reported: how
   many deliveries were redelivered (duplicates caused by revocation) per event.

Why not ``benchmarks/build/loadgen``: when this script was written the C load generator
could not declare a stream (it can now: ``run.py --streams`` measures issue 14's stream
scenarios with it, see docs/performance.md). Both sides of every comparison here use the same Python client,
so the numbers compare the broker, not the clients; absolute msg/s are client-bound (one
aio-pika process manages roughly 10-20k msg/s), which is why publishing uses processes.

Writes ``benchmarks/results/streams-<date>.json`` (``--out`` to change) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
import pika

from smartbroker.launcher import BrokerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = b"x" * 1024
STREAM = {"x-queue-type": "stream"}


# --------------------------------------------------------------------------- broker


def declare(url: str, name: str, arguments: dict[str, Any] | None) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as c:
        ch = c.channel()
        ch.queue_delete(name)
        ch.queue_declare(name, durable=True, arguments=arguments)


def delete(url: str, name: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as c:
        c.channel().queue_delete(name)


# --------------------------------------------------------------------------- publish


async def _publish(url: str, queue: str, count: int, window: int, worker: int) -> None:
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        sem = asyncio.Semaphore(window)
        pending: set[asyncio.Task] = set()

        async def one(i: int) -> None:
            try:
                msg = aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                       headers={"x-message-key": f"w{worker}-k{i % 64}"})
                await ch.default_exchange.publish(msg, routing_key=queue)
            finally:
                sem.release()

        for i in range(count):
            await sem.acquire()
            t = asyncio.create_task(one(i))
            pending.add(t)
            t.add_done_callback(pending.discard)
        await asyncio.gather(*pending)


def _publish_proc(url: str, queue: str, count: int, window: int, worker: int,
                  start: Any, done: Any) -> None:
    start.wait()
    asyncio.run(_publish(url, queue, count, window, worker))
    done.put(time.monotonic())


def publish_rate(url: str, queue: str, total: int, publishers: int, window: int) -> float:
    """msg/s from the common start until the last confirm of the last publisher."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    per = total // publishers
    procs = [ctx.Process(target=_publish_proc, args=(url, queue, per, window, w, start, done))
             for w in range(publishers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let the spawned interpreters import aio-pika before the clock starts
    t0 = time.monotonic()
    start.set()
    ends = [done.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return per * publishers / (max(ends) - t0)


# --------------------------------------------------------------------------- consume


async def _consume(url: str, queue: str, total: int) -> float:
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=1000)
        q = await ch.get_queue(queue, ensure=False)
        got = 0
        finished = asyncio.get_running_loop().create_future()
        t0 = time.monotonic()

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            got += 1
            if got % 100 == 0 or got == total:
                await msg.ack(multiple=True)
            if got == total and not finished.done():
                finished.set_result(time.monotonic())

        await q.consume(on, arguments={"x-stream-offset": "first"})
        end = await asyncio.wait_for(finished, 300)
        return total / (end - t0)


# --------------------------------------------------------------------------- rebalance


def _producer_proc(url: str, queue: str, rate: int, stop: Any) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    props = [pika.BasicProperties(delivery_mode=2, headers={"x-message-key": f"k{i}"})
             for i in range(256)]
    t0 = time.monotonic()
    sent = 0
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        while sent < due:
            ch.basic_publish("", queue, BODY, props[sent % 256])
            sent += 1
        conn.process_data_events(time_limit=0.002)
    conn.close()


class Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[float] = []
        self.redelivered = 0
        self.conn: aio_pika.abc.AbstractConnection | None = None

    async def join(self, url: str, queue: str, group: str, mode: str) -> None:
        self.conn = await aio_pika.connect(url)
        ch = await self.conn.channel()
        await ch.set_qos(prefetch_count=100)
        q = await ch.get_queue(queue, ensure=False)

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.times.append(time.monotonic())
            if msg.redelivered:
                self.redelivered += 1
            await msg.ack()

        await q.consume(on, arguments={"x-consumer-group": group, "x-rebalance": mode,
                                       "x-stream-offset": "next"})

    async def leave(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def max_gap(times: list[float], lo: float, hi: float) -> float:
    pts = [t for t in times if lo <= t <= hi]
    pts = [lo, *pts, hi]
    return max(b - a for a, b in zip(pts, pts[1:], strict=False))


async def _rebalance(url: str, queue: str, mode: str, events: int, settle: float) -> dict:
    group = f"bench-{mode}"
    stable = [Member(f"m{i}") for i in range(4)]
    for m in stable:
        await m.join(url, queue, group, mode)
    await asyncio.sleep(settle)  # steady state before the first event
    pauses, baseline, dups = [], [], []
    for _ in range(events):
        t_before = time.monotonic()
        baseline.append(max(max_gap(m.times, t_before - settle / 2, t_before) for m in stable))
        red0 = sum(m.redelivered for m in stable)
        extra = Member("extra")
        t_event = time.monotonic()
        await extra.join(url, queue, group, mode)  # join: one rebalance
        await asyncio.sleep(settle)
        pauses.append(max(max_gap(m.times, t_event - 0.1, t_event + settle - 0.05) for m in stable))
        t_event = time.monotonic()
        await extra.leave()  # leave: another rebalance
        await asyncio.sleep(settle)
        pauses.append(max(max_gap(m.times, t_event - 0.1, t_event + settle - 0.05) for m in stable))
        dups.append((sum(m.redelivered for m in stable) + extra.redelivered - red0) / 2)
    for m in stable:
        await m.leave()
    return {
        "rebalances": len(pauses),
        "pause_ms_median": round(statistics.median(pauses) * 1000, 2),
        "pause_ms_max": round(max(pauses) * 1000, 2),
        "pause_ms_each": [round(p * 1000, 2) for p in pauses],
        "steady_gap_ms_median": round(statistics.median(baseline) * 1000, 2),
        "redelivered_per_rebalance": round(statistics.mean(dups), 1),
    }


def rebalance_pause(url: str, mode: str, rate: int, events: int, settle: float) -> dict:
    queue = f"sbbench-streams-groups-{mode}"
    declare(url, queue, {**STREAM, "x-partitions": 8})
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    producer = ctx.Process(target=_producer_proc, args=(url, queue, rate, stop))
    producer.start()
    try:
        return asyncio.run(_rebalance(url, queue, mode, events, settle))
    finally:
        stop.set()
        producer.join(10)
        delete(url, queue)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=40_000, help="messages per publish run")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--window", type=int, default=100, help="unconfirmed messages per publisher")
    ap.add_argument("--reps", type=int, default=3, help="runs per throughput case (median)")
    ap.add_argument("--rate", type=int, default=2000, help="producer msg/s during rebalances")
    ap.add_argument("--rebalances", type=int, default=5, help="join+leave cycles per mode")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds around each event")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from machine import machine_info  # the runner's machine description

    tmp = Path(tempfile.mkdtemp(prefix="sb-streams-bench-"))
    broker = BrokerProcess(tmp / "data", log_level="warning")
    broker.start(timeout=20)
    url = broker.url
    results: dict[str, Any] = {"publish": {}, "consume": {}, "rebalance": {}}
    try:
        cases = {"stream (1 partition)": {**STREAM},
                 "stream (8 partitions)": {**STREAM, "x-partitions": 8},
                 "classic durable": None}
        for name, arguments in cases.items():
            runs, consume_runs = [], []
            for _ in range(args.reps):
                queue = "sbbench-streams-pub"
                declare(url, queue, arguments)
                runs.append(publish_rate(url, queue, args.messages, args.publishers, args.window))
                if arguments is not None:
                    consume_runs.append(asyncio.run(_consume(url, queue, args.messages)))
                delete(url, queue)
            results["publish"][name] = {"msg_s": round(statistics.median(runs)),
                                        "runs": [round(r) for r in runs]}
            if consume_runs:
                results["consume"][name] = {"msg_s": round(statistics.median(consume_runs)),
                                            "runs": [round(r) for r in consume_runs]}
            print(f"  {name}: publish {results['publish'][name]['msg_s']} msg/s", flush=True)
        for mode in ("cooperative", "eager"):
            results["rebalance"][mode] = rebalance_pause(url, mode, args.rate, args.rebalances,
                                                         args.settle)
            print(f"  rebalance {mode}: {results['rebalance'][mode]['pause_ms_median']} ms",
                  flush=True)
    finally:
        broker.stop(10)
        shutil.rmtree(tmp, ignore_errors=True)

    doc = {
        "benchmark": "streams",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "broker": "smartbroker (subprocess, temp data dir)",
        "params": {"body_bytes": len(BODY), "persistent": True, "messages": args.messages,
                   "publishers": args.publishers, "confirm_window": args.window,
                   "reps": args.reps, "consume_prefetch": 1000, "group_partitions": 8,
                   "group_members": 4, "producer_rate": args.rate,
                   "rebalance_cycles": args.rebalances, "settle_s": args.settle,
                   "client": f"aio-pika {aio_pika.__version__} / pika {pika.__version__}"},
        "results": results,
    }
    out = args.out or HERE / "results" / f"streams-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")

    print()
    print(f"{'case':<28}{'publish msg/s':>15}{'replay msg/s':>15}")
    for name, r in results["publish"].items():
        c = results["consume"].get(name, {}).get("msg_s", "-")
        print(f"{name:<28}{r['msg_s']:>15}{c!s:>15}")
    print()
    print(f"{'rebalance (8 parts, 4 members)':<32}{'pause p50 ms':>14}{'max ms':>9}"
          f"{'steady gap ms':>15}{'redelivered/rebal':>19}")
    for mode, r in results["rebalance"].items():
        print(f"{mode:<32}{r['pause_ms_median']:>14}{r['pause_ms_max']:>9}"
              f"{r['steady_gap_ms_median']:>15}{r['redelivered_per_rebalance']:>19}")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
