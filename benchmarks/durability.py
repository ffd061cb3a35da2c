#!/usr/bin/env python3
"""Durability benchmark for smartbroker: persistent throughput, RSS and recovery time.

Starts its own smartbroker subprocess on free ports with a temporary data dir, then:

a) persistent publish throughput with publisher confirms (1 KiB, window 100):
   * with the C load generator (``benchmarks/build/loadgen``, built by ``make -C
     benchmarks``) when present: scenario C of run.py (1 publisher, 1 consumer with
     manual acks, durable queue, --persistent --confirm 100), for --duration seconds;
   * always also a publish-only run from Python (pika, asynchronous SelectConnection,
     window 100), --tp-count messages, into a queue nobody consumes;
b) fills a durable queue with --count persistent 1 KiB messages (pika, confirms) and reads
   the broker's RSS (VmRSS, VmHWM from /proc/<pid>/status) while they are queued;
c) restarts the broker gracefully (SIGTERM, then start) and after kill -9, and reports
   the recovery time: from process start to the AMQP port accepting connections, and to
   the first message consumable (basic.get returns one); the queue depth is checked.

Writes benchmarks/results/durability-<date>.json (machine info, load average, every
number) and prints a table.

    .venv/bin/python benchmarks/durability.py                  # 1,000,000 messages
    .venv/bin/python benchmarks/durability.py --count 100000 --duration 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "build" / "loadgen"
sys.path.insert(0, str(HERE))
import pika  # noqa: E402
from machine import loadavg, machine_info  # noqa: E402  (same machine description as run.py)

from smartbroker.launcher import BrokerProcess  # noqa: E402

START_TIMEOUT, STOP_TIMEOUT = 600.0, 300.0  # a million persistent messages to recover, flush


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------- Python confirm publisher


def publish_confirmed(url: str, queue: str, count: int, size: int, window: int) -> float:
    """Publish ``count`` persistent messages with at most ``window`` unconfirmed; returns
    seconds from the first publish to the last confirm. pika SelectConnection (async)."""
    body = b"x" * size
    props = pika.BasicProperties(delivery_mode=2)
    state = {"sent": 0, "confirmed": 0, "t0": 0.0, "t1": 0.0, "error": None}

    def pump(ch) -> None:
        while state["sent"] < count and state["sent"] - state["confirmed"] < window:
            ch.basic_publish("", queue, body, props)
            state["sent"] += 1

    def on_confirm(frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            state["error"] = "nack"
        state["confirmed"] = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if state["confirmed"] >= count:
            state["t1"] = time.monotonic()
            conn.close()
        else:
            pump(ch_ref[0])

    ch_ref: list = []

    def on_declared(_frame) -> None:
        state["t0"] = time.monotonic()
        pump(ch_ref[0])

    def on_channel(ch) -> None:
        ch_ref.append(ch)
        ch.confirm_delivery(on_confirm)
        ch.queue_declare(queue, durable=True, callback=on_declared)

    def on_open(c) -> None:
        c.channel(on_open_callback=on_channel)

    def on_closed(_c, reason) -> None:
        if state["confirmed"] < count:
            state["error"] = repr(reason)
        conn.ioloop.stop()

    conn = pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                 on_open_error_callback=lambda _c, e: on_closed(_c, e),
                                 on_close_callback=on_closed)
    conn.ioloop.start()
    if state["error"]:
        raise RuntimeError(f"publisher failed: {state['error']}")
    return state["t1"] - state["t0"]


def queue_depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def first_message_after_start(broker: BrokerProcess, queue: str) -> tuple[float, float]:
    """Start the broker; (s to port open, s to the first message consumable)."""
    to_port = broker.start(START_TIMEOUT, wait_api=False).startup_seconds
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    while True:
        try:
            conn = pika.BlockingConnection(params)
            method, _props, body = conn.channel().basic_get(queue, auto_ack=False)
            conn.close()  # unacked: back to the queue
            if method is not None and body:
                return to_port, time.monotonic() - broker.started_at
        except pika.exceptions.AMQPError:
            pass
        time.sleep(0.005)


# ----------------------------------------------------------------------------- loadgen


def loadgen_throughput(broker: BrokerProcess, args: argparse.Namespace) -> dict | None:
    if not LOADGEN.exists():
        return None
    cmd = [str(LOADGEN), "--url", broker.url, "--queue", "sbdur-c", "-p", "1", "-c", "1",
           "-s", str(args.size), "--prefetch", "100", "--durable", "--persistent",
           "--confirm", str(args.window), "-d", str(args.duration), "--max-backlog", "5000",
           "--coalesce-us", "500", "--broker-pid", str(broker.pid), "--label", "durability-C"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    if out.returncode not in (0, 3):
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def pick(d: dict, *keys: str) -> object:
    for k in keys:
        if k in d:
            return d[k]
    return None


# -------------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000, help="messages queued for (b)/(c)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=100, help="confirm window")
    p.add_argument("--fill-window", type=int, default=100, help="confirm window while filling")
    p.add_argument("--duration", type=float, default=10, help="loadgen run length (s)")
    p.add_argument("--tp-count", type=int, default=100_000, help="Python publish-only run")
    p.add_argument("--fsync", default="batch", choices=["always", "batch", "never"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sb-durability-bench-"))
    broker = BrokerProcess(tmp / "data", env={"SMARTBROKER_FSYNC": args.fsync})
    result: dict = {"benchmark": "durability", "date": dt.datetime.now().isoformat(timespec="seconds"),
                    "machine": machine_info(), "loadavg_before": loadavg(),
                    "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "loadgen": LOADGEN.exists()}
    rows: list[tuple[str, str]] = []
    try:
        result["cold_start_s"] = broker.start(START_TIMEOUT, wait_api=False).startup_seconds
        broker.wait_serving()

        # (a) throughput
        lg = loadgen_throughput(broker, args)
        if lg is not None:
            result["a_loadgen_scenario_c"] = lg
            rate = pick(lg, "pub_rate", "publish_rate")
            deliv = pick(lg, "deliv_rate", "deliver_rate")
            rows.append(("a) loadgen C: persistent+confirm(100), 1 pub + 1 con, 1 KiB",
                         f"{rate:,.0f} pub msg/s, {deliv:,.0f} deliv msg/s" if rate else "see JSON"))
            lat = lg.get("confirm_latency_us") or {}
            if lat.get("count"):
                rows.append(("   publish->confirm latency p50 / p99",
                             f"{lat['p50'] / 1000:.2f} / {lat['p99'] / 1000:.2f} ms"))
            if lg.get("broker_cpu_pct") is not None:
                rows.append(("   broker CPU", f"{lg['broker_cpu_pct']:.0f} % of one core"))
        secs = publish_confirmed(broker.url, "sbdur-pub", args.tp_count, args.size, args.window)
        result["a_python_publish_only"] = {"count": args.tp_count, "seconds": secs,
                                           "msg_per_s": args.tp_count / secs}
        rows.append((f"a) pika publish-only, persistent+confirm({args.window}), 1 KiB",
                     f"{args.tp_count / secs:,.0f} msg/s ({args.tp_count:,} in {secs:.1f} s)"))
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.channel().queue_delete("sbdur-pub")
        conn.close()

        # (b) fill and RSS
        rss_empty = rss_kib(broker.pid)
        store_before = dir_bytes(broker.data_dir / "messages")  # (a)'s settled records
        secs = publish_confirmed(broker.url, "sbdur-fill", args.count, args.size, args.fill_window)
        assert queue_depth(broker.url, "sbdur-fill") == args.count
        rss_full = rss_kib(broker.pid)
        store = dir_bytes(broker.data_dir / "messages") - store_before
        result["b_fill"] = {"count": args.count, "seconds": secs, "msg_per_s": args.count / secs,
                            "rss_empty_kib": rss_empty["VmRSS"], "rss_queued_kib": rss_full["VmRSS"],
                            "hwm_kib": rss_full["VmHWM"], "store_bytes": store,
                            "rss_bytes_per_message": (rss_full["VmRSS"] - rss_empty["VmRSS"]) * 1024 / args.count}
        rows.append((f"b) fill {args.count:,} x {args.size} B, confirm({args.fill_window})",
                     f"{args.count / secs:,.0f} msg/s ({secs:.0f} s); store {store / 2**20:,.0f} MiB"))
        rows.append(("b) broker RSS: empty -> queued (peak)",
                     f"{rss_empty['VmRSS'] / 1024:,.0f} -> {rss_full['VmRSS'] / 1024:,.0f} MiB "
                     f"({rss_full['VmHWM'] / 1024:,.0f}); "
                     f"{result['b_fill']['rss_bytes_per_message']:.0f} B/msg"))

        # (c) recovery: graceful restart, then kill -9
        rc = broker.stop(STOP_TIMEOUT)
        stop_s = broker.stop_seconds
        if rc != 0:
            raise RuntimeError(f"broker exited with {rc} on SIGTERM")
        to_port, to_first = first_message_after_start(broker, "sbdur-fill")
        depth = queue_depth(broker.url, "sbdur-fill")
        rss_after = rss_kib(broker.pid)
        result["c_graceful"] = {"stop_s": stop_s, "to_port_s": to_port, "to_first_message_s": to_first,
                                "depth": depth, "rss_kib": rss_after["VmRSS"], "hwm_kib": rss_after["VmHWM"]}
        rows.append((f"c) graceful restart with {depth:,} queued: port / first msg",
                     f"{to_port:.2f} s / {to_first:.2f} s (stop {stop_s:.2f} s); "
                     f"RSS {rss_after['VmRSS'] / 1024:,.0f} MiB"))
        assert depth == args.count, f"graceful restart: {depth} of {args.count} back"
        broker.wait_serving()  # a kill -9 of a broker that finished starting
        broker.kill()
        to_port, to_first = first_message_after_start(broker, "sbdur-fill")
        depth = queue_depth(broker.url, "sbdur-fill")
        rss_after = rss_kib(broker.pid)
        result["c_after_kill9"] = {"to_port_s": to_port, "to_first_message_s": to_first,
                                   "depth": depth, "rss_kib": rss_after["VmRSS"],
                                   "hwm_kib": rss_after["VmHWM"]}
        rows.append((f"c) restart after kill -9 with {depth:,} queued: port / first msg",
                     f"{to_port:.2f} s / {to_first:.2f} s; RSS {rss_after['VmRSS'] / 1024:,.0f} MiB"))
        assert depth == args.count, f"after kill -9: {depth} of {args.count} back"
        result["recovery_log"] = [line for line in broker.log().splitlines()
                                  if "recovered" in line or "truncat" in line or "bad record" in line]
        broker.stop(STOP_TIMEOUT)
    finally:
        if broker.alive():
            broker.kill()
        result["loadavg_after"] = loadavg()
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"\nsmartbroker durability benchmark  ({result['machine']['nproc']} CPU, "
          f"{result['machine']['cpu_model']}; fsync={args.fsync}; load before "
          f"{result['loadavg_before'][0]:.1f})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if not args.no_write:
        out = args.out or HERE / "results" / f"durability-{dt.date.today().isoformat()}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
