#!/usr/bin/env python3
"""A Jepsen-style run against replicated quorum queues (issue 16's proof): three nodes
with their own etcd, confirmed publishers and acking consumers hopping between random
nodes (chaos_clients.py), and a nemesis that, one fault at a time, kill -9s a node and
restarts it, SIGSTOPs and SIGCONTs one, or cuts one off from the others and from etcd
(network namespaces, tests/cluster/netns.py) and heals it; a queue's leader is the
target more often than not. At the end every fault is undone, the publishers settle
what is still unconfirmed, the consumers drain the queues, and the checker
(chaos_check.py) reports lost, duplicated, phantom and reordered messages.

    .venv/bin/python benchmarks/chaos.py --minutes 10             # the recorded run
    .venv/bin/python benchmarks/chaos.py --minutes 1 --streams    # + a replicated stream

Needs root for the partitions (without namespaces it runs kills and pauses only, and
says so). The result goes to benchmarks/results/chaos-<date>.json; the exit status is 1
when anything confirmed was lost (or duplicated among confirmed, or invented).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika
from chaos_check import check
from chaos_clients import Consumer, Ledger, Publisher
from machine import machine_info
from replica_cluster import HERE, ReplicaCluster

FAULTS = ("kill", "pause", "partition")


class Nemesis:
    """One fault at a time, then back to a whole cluster before the next."""

    def __init__(self, cluster: ReplicaCluster, queues: list[str], rng: random.Random,
                 faults: list[str]) -> None:
        self.cluster, self.queues, self.rng, self.faults = cluster, queues, rng, faults
        self.events: list[dict] = []
        self.t0 = time.monotonic()

    def target(self) -> tuple[str, bool]:
        leader = self.cluster.leader(self.rng.choice(self.queues))
        if leader in self.cluster.names and self.rng.random() < 0.6:
            return leader, True
        name = self.rng.choice(self.cluster.names)
        return name, name == leader

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(2, 6))
            if time.monotonic() >= deadline:
                return
            kind = self.rng.choice(self.faults)
            node, leader = self.target()
            hold = self.rng.uniform(1, 12)
            event = {"t": round(time.monotonic() - self.t0, 1), "fault": kind, "node": node,
                     "leader": leader, "hold_s": round(hold, 1)}
            self.events.append(event)
            print(f"  {event['t']:7.1f}s {kind} {node}{' (leader)' if leader else ''} "
                  f"for {hold:.1f}s", file=sys.stderr, flush=True)
            try:
                await self.inject(kind, node, hold)
                t = time.monotonic()
                await asyncio.to_thread(self.cluster.wait_members, 120)
                event["whole_again_s"] = round(time.monotonic() - t, 1)
            except Exception as exc:  # noqa: BLE001 - recorded; the run stops at the end
                event["error"] = f"{type(exc).__name__}: {exc}"
                print(f"    fault handling failed: {event['error']}", file=sys.stderr)
                await asyncio.to_thread(self.cluster.repair)

    async def inject(self, kind: str, node: str, hold: float) -> None:
        c = self.cluster
        do, undo = {"kill": (c.kill, c.restart), "pause": (c.pause, c.resume),
                    "partition": (c.cut, c.heal)}[kind]
        do(node)
        await asyncio.sleep(hold)
        await asyncio.to_thread(undo, node)


def declare(cluster: ReplicaCluster, queues: list[str], streams: list[str],
            queue_type: str) -> dict:
    """Declare them; each one's members as the API shows them once three are online
    (or after 60 s: a run without replicas says so in its result)."""
    with pika.BlockingConnection(pika.URLParameters(cluster.url("n1"))) as conn:
        ch = conn.channel()
        for i, q in enumerate(queues):  # leaders spread: balanced
            replicas = {"x-quorum-initial-group-size": 3} if queue_type == "quorum" else {}
            ch.queue_declare(q, durable=True, arguments={
                "x-queue-type": queue_type, **replicas,
                "x-queue-leader-locator": "balanced" if i else "client-local"})
        for s in streams:
            ch.queue_declare(s, durable=True, arguments={
                "x-queue-type": "stream", "x-initial-cluster-size": 3})
    deadline = time.monotonic() + 60
    for q in queues + streams:
        while len(cluster.queue(q).get("online", [])) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    return {q: cluster.queue(q).get("online") for q in queues + streams}


async def drained(cluster: ReplicaCluster, ledger: Ledger, queues: list[str],
                  timeout: float) -> bool:
    """Until every quorum queue is empty with nothing unacked and no delivery came for
    3 s (a stream: no delivery for 3 s); False at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        infos = [await asyncio.to_thread(cluster.queue, q) for q in queues]
        empty = all(i and not i.get("messages", 1) for i in infos)
        if empty and time.monotonic() - ledger.last_delivery > 3:
            return True
    return False


async def run(args: argparse.Namespace, cluster: ReplicaCluster, result: dict) -> Ledger:
    rng = random.Random(args.seed)
    queues = [f"chaos-q{i}" for i in range(args.queues)]
    streams = ["chaos-s0"] if args.streams else []
    result["members_online"] = await asyncio.to_thread(declare, cluster, queues, streams,
                                                       args.queue_type)
    print(f"  members online: {result['members_online']}", file=sys.stderr)
    ledger = Ledger()
    faults = [f for f in FAULTS if f != "partition" or cluster.partitions]
    nodes = lambda: {n: cluster.url(n) for n in cluster.names if n not in cluster.killed}  # noqa: E731
    stop, finish, stop_consumers = asyncio.Event(), asyncio.Event(), asyncio.Event()
    pubs = [Publisher(k, queues + streams, nodes, ledger, args.rate,
                      rng=random.Random(rng.random())) for k in range(args.publishers)]
    cons = [Consumer(k, q, nodes, ledger, stream=q in streams, rng=random.Random(rng.random()))
            for k, q in enumerate(q for q in queues + streams
                                  for _ in range(1 if q in streams else args.consumers))]
    pub_tasks = [asyncio.create_task(p.run(stop, finish)) for p in pubs]
    con_tasks = [asyncio.create_task(c.run(stop_consumers)) for c in cons]
    nemesis = Nemesis(cluster, queues + streams, rng, faults)
    t0 = result["t0"] = nemesis.t0 = time.monotonic()
    await nemesis.run(t0 + args.minutes * 60)
    result["faults"] = nemesis.events
    print("  chaos over: repairing, settling, draining", file=sys.stderr)
    await asyncio.to_thread(cluster.repair)
    stop.set()
    settle_timeout = 120
    _, late = await asyncio.wait(pub_tasks, timeout=settle_timeout)
    finish.set()
    if late:
        await asyncio.wait(late, timeout=30)
    result["publishers_settled"] = not late
    result["left_unsettled"] = {f"p{p.k}": len(p.resend) for p in pubs if p.resend}
    result["drained"] = await drained(cluster, ledger, queues, 180)
    stop_consumers.set()
    await asyncio.wait(con_tasks, timeout=30)
    result["chaos_s"] = round(time.monotonic() - t0, 1)
    return ledger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--queues", type=int, default=2, help="quorum queues")
    p.add_argument("--queue-type", default="quorum", choices=("quorum", "classic"),
                   help="classic: the same run on unreplicated durable queues")
    p.add_argument("--streams", action="store_true", help="and one replicated stream")
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--consumers", type=int, default=2, help="per quorum queue")
    p.add_argument("--rate", type=float, default=50, help="publishes/s per publisher")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-netns", action="store_true", help="loopback: no partitions")
    p.add_argument("--keep", action="store_true", help="keep the data and logs")
    p.add_argument("--out", help="JSON file [benchmarks/results/chaos-<date>.json]")
    args = p.parse_args()
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # every lost connection
    args.seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    tmp = Path(tempfile.mkdtemp(prefix="sb-chaos-"))
    started = dt.datetime.now(dt.UTC)
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "../smartbroker"],
                           capture_output=True, text=True).stdout.split("\n")
    result: dict = {"benchmark": "chaos", "started": started.isoformat(timespec="seconds"),
                    "commit": commit, "uncommitted": [d[3:] for d in dirty if d], "command": " ".join(sys.argv), "seed": args.seed,
                    "machine": machine_info(), "settings": {
                        k: v for k, v in vars(args).items() if k not in ("out", "keep")}}
    cluster = ReplicaCluster(tmp, netns=not args.no_netns)
    result["partitions"] = cluster.partitions or f"off: {cluster.netns_reason}"
    print(f"chaos: {args.minutes} min, seed {args.seed}, data {tmp}, partitions "
          f"{result['partitions']}", file=sys.stderr)
    try:
        cluster.start()
        ledger = asyncio.run(run(args, cluster, result))
        result["check"] = check(ledger, result.pop("t0"))
    finally:
        result["broker_tracebacks"] = cluster.tracebacks()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    kinds: dict[str, int] = {}
    for e in result.get("faults", []):
        kinds[e["fault"]] = kinds.get(e["fault"], 0) + 1
    result["fault_counts"] = kinds
    out = Path(args.out) if args.out else \
        HERE / "results" / f"chaos-{started.date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    c = result["check"]
    print(json.dumps({k: c[k] for k in ("published", "confirmed", "consumed", "lost",
                                        "phantom", "duplicated", "order_violations")}
                     | {"faults": kinds}, indent=1))
    print(f"results: {out}", file=sys.stderr)
    bad = c["lost"] or c["phantom"] or c["duplicated"]["among_confirmed"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
