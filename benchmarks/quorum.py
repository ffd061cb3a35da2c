#!/usr/bin/env python3
"""Quorum queue against classic (issue 16's "Speed"): scenario C's shape (1 publisher,
1 consumer, 1 KiB persistent, confirms with a window of 100, manual ack, prefetch 100)
on a quorum queue replicated on three nodes (their own etcd, loopback; the load
generator talks to the leader) and on a classic durable queue on one node, runs
alternating, side by side: msg/s, latency percentiles, broker CPU. Target: the quorum
queue at 0.5x classic or better.

The cluster's CPU is its three nodes and etcd; ``broker_cpu_s`` is their CPU-seconds
over the load generator's run (setup included), ``broker_cpu_pct`` the load generator's
own measure over the publishing window.

    .venv/bin/python benchmarks/quorum.py                       # reps 3, 5 s each
    .venv/bin/python benchmarks/quorum.py --reps 1 --duration 2  # a check that it runs
    .venv/bin/python benchmarks/quorum.py --rabbitmq amqp://guest:guest@localhost:5672/
        # also RabbitMQ's quorum queue (one node: a lower bound for three), same scenario

Results go to benchmarks/results/quorum-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pika
from machine import descendants, machine_info
from replica_cluster import HERE, ReplicaCluster
from report import summarize
from runner import Target, build_loadgen, make_target, run_once
from scenarios import Scenario, names_for, standard_scenarios

from smartbroker.launcher import BrokerProcess

QUORUM_ARGS = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}


def scenarios() -> tuple[Scenario, Scenario]:
    c = next(s for s in standard_scenarios() if s.key == "C")
    classic = Scenario("C", c.title + ", classic on one node", [*c.args, "--keep"],
                       show_latency=True)
    quorum = Scenario("QC", c.title + ", quorum on three nodes",
                      [*c.args, "--keep", *(a for k, v in QUORUM_ARGS.items()
                                            for a in ("--queue-arg", f"{k}={v}"))],
                      show_latency=True)
    return classic, quorum


def queue_of(s: Scenario) -> str:
    return names_for(s)[1]


def wait_replicated(cluster: ReplicaCluster, queue: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = cluster.replica_set(queue)
        if len(cluster.queue(queue).get("online", [])) == 3 and len(record.get("isr", [])) == 3:
            return record
        time.sleep(0.1)
    raise TimeoutError(f"{queue} is not replicated on three nodes: {cluster.queue(queue)}")


def loadgen_args(args: argparse.Namespace) -> argparse.Namespace:
    """What runner.run_once reads (run.py's defaults)."""
    return argparse.Namespace(duration=args.duration, latency_duration=args.duration,
                              coalesce_us=500, backlog=5000, loadgen_arg=[], quiet=20,
                              quiet_max=args.quiet_max)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=5, help="publish seconds per run")
    p.add_argument("--quiet-max", type=float, default=5,
                   help="seconds to wait for a quiet machine before each run")
    p.add_argument("--out", help="JSON file [benchmarks/results/quorum-<date>.json]")
    p.add_argument("--rabbitmq", metavar="URL",
                   help="also run the quorum scenario on this RabbitMQ (one node there: "
                        "a lower bound for its quorum queues), e.g. "
                        "amqp://guest:guest@localhost:5672/")
    args = p.parse_args()
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="sb-quorum-bench-"))
    started = dt.datetime.now(dt.UTC)
    classic, quorum = scenarios()
    single = BrokerProcess(tmp / "single" / "data", log_level="warning")
    cluster = ReplicaCluster(tmp / "cluster", netns=False)
    lg = loadgen_args(args)
    runs: dict[str, list[dict]] = {"classic, one node": [], "quorum, three nodes": []}
    rabbit = "RabbitMQ quorum, one node"
    if args.rabbitmq:
        runs[rabbit] = []
    try:
        single.start()
        cluster.start()
        with pika.BlockingConnection(pika.URLParameters(single.url)) as conn:
            conn.channel().queue_declare(queue_of(classic), durable=True)
        with pika.BlockingConnection(pika.URLParameters(cluster.url("n1"))) as conn:
            conn.channel().queue_declare(queue_of(quorum), durable=True, arguments=QUORUM_ARGS)
        replica_set = wait_replicated(cluster, queue_of(quorum))
        pids = descendants(list(cluster.pids().values()) + [cluster.etcd.proc.pid])  # type: ignore[union-attr]
        targets = {"classic, one node": (classic, Target(single.url, "classic", descendants(
                       [single.pid]))),
                   "quorum, three nodes": (quorum, Target(cluster.url("n1"), "quorum", pids))}
        if args.rabbitmq:
            with pika.BlockingConnection(pika.URLParameters(args.rabbitmq)) as conn:
                conn.channel().queue_declare(queue_of(quorum), durable=True,
                                             arguments=QUORUM_ARGS)
            targets[rabbit] = (quorum, make_target(args.rabbitmq, "rabbitmq", None))
        for rep in range(1, args.reps + 1):
            for name, (scenario, target) in targets.items():
                res = run_once(scenario, target, lg)
                res["rep"] = rep
                res["broker_cpu_s"] = res.get("broker_cpu_s_whole_process")
                runs[name].append(res)
                lat = res.get("latency_us") or {}
                print(f"  {name} rep {rep}: pub {res.get('pub_rate', 0):,.0f}/s deliv "
                      f"{res.get('deliv_rate', 0):,.0f}/s p50 {lat.get('p50', 0) / 1000:.2f} ms "
                      f"p99 {lat.get('p99', 0) / 1000:.2f} ms broker CPU "
                      f"{res.get('broker_cpu_s')} s {res.get('error') or ''}", file=sys.stderr)
    finally:
        cluster.stop()
        single.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out_runs = {name: {**summarize(r), "broker_cpu_s": sorted(
        x["broker_cpu_s"] for x in r if x.get("broker_cpu_s") is not None), "raw": r}
        for name, r in runs.items()}
    med = {name: out_runs[name]["median"] for name in runs}
    one, three = med["classic, one node"]["deliv_rate"], med["quorum, three nodes"]["deliv_rate"]
    if args.rabbitmq and med[rabbit]["deliv_rate"] and three:
        out_runs["quorum_over_rabbitmq_quorum"] = round(three / med[rabbit]["deliv_rate"], 3)
    result = {"benchmark": "quorum", "started": started.isoformat(timespec="seconds"),
              "machine": machine_info(), "command": " ".join(sys.argv), "reps": args.reps,
              "duration_s": args.duration, "replica_set": replica_set, **out_runs,
              "quorum_over_classic": round(three / one, 3) if one and three else None}
    out = Path(args.out) if args.out else \
        HERE / "results" / f"quorum-{started.date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("deliv_rate", "pub_rate", "latency_p50_ms", "latency_p99_ms", "broker_cpu_pct",
            "deliv_per_broker_cpu_s")
    print(json.dumps({name: {k: med[name][k] for k in keys} for name in runs}
                     | {"quorum_over_classic": result["quorum_over_classic"]}, indent=1))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
