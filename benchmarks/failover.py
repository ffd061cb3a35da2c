#!/usr/bin/env python3
"""Failover time of a replicated quorum queue (issue 16): ``--kills`` times, kill -9 the
queue's leader and measure the time from the kill to the first confirm of a publish
sent after it through a surviving node. Three nodes on loopback with their own etcd and
the default membership lease (5 s: failover should take under 10 s).

A probe publisher on a surviving node sends a persistent message every ``--probe-ms``
with confirms (a probe nacked while its node still forwards to the dead leader is just
a failed probe). Before each kill the killed node of the round before is back and in
the in-sync replica set again (etcd's ``replica/isr/<log id>``), so every round starts
from a whole cluster.

    .venv/bin/python benchmarks/failover.py                   # 20 kills
    .venv/bin/python benchmarks/failover.py --kills 2         # a check that it runs

Results go to benchmarks/results/failover-<date>.json (median and worst).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiormq
import pika
from machine import machine_info
from pamqp.commands import Basic
from replica_cluster import HERE, ReplicaCluster

QUEUE = "failover-q"


def wait_whole(cluster: ReplicaCluster, timeout: float = 120) -> dict:
    """Until the queue has three members online, all in its ISR; its replica record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = cluster.replica_set(QUEUE)
        online = cluster.queue(QUEUE).get("online", [])
        if len(online) == 3 and len(record.get("isr", [])) == 3:
            return record
        time.sleep(0.1)
    raise TimeoutError(f"{QUEUE} not whole: {cluster.queue(QUEUE)} {cluster.replica_set(QUEUE)}")


async def first_confirm_after(urls: list[str], killed_at: asyncio.Event, t_kill: list[float],
                              probe_s: float, timeout: float) -> float | None:
    """Probe through ``urls`` (reconnecting, alternating) from before the kill; seconds
    from the kill to the first ack of a probe sent after it (None at ``timeout``)."""
    found: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    props = Basic.Properties(delivery_mode=2)

    def on_done(sent: float, fut: asyncio.Future) -> None:
        if found.done() or fut.cancelled() or fut.exception() is not None:
            return
        if isinstance(fut.result(), Basic.Ack) and killed_at.is_set() and sent >= t_kill[0]:
            found.set_result(time.monotonic() - t_kill[0])

    async def probe() -> None:
        i = 0
        while not found.done():
            conn = None
            try:
                conn = await asyncio.wait_for(aiormq.connect(urls[i % len(urls)]), 5)
                ch = await conn.channel(publisher_confirms=True)
                while not found.done() and not conn.is_closed:
                    sent = time.monotonic()
                    fut = asyncio.ensure_future(ch.basic_publish(
                        b"probe", routing_key=QUEUE, properties=props))
                    fut.add_done_callback(lambda f, s=sent: on_done(s, f))
                    await asyncio.sleep(probe_s)
            except Exception:  # noqa: BLE001 - the probe's node failed: the other one
                await asyncio.sleep(probe_s)
            finally:
                i += 1
                if conn is not None and not conn.is_closed:
                    asyncio.ensure_future(conn.close())
    task = asyncio.create_task(probe())
    try:
        return await asyncio.wait_for(asyncio.shield(found), timeout)
    except TimeoutError:
        return None
    finally:
        task.cancel()


async def one_kill(cluster: ReplicaCluster, args: argparse.Namespace) -> dict:
    leader = cluster.leader(QUEUE)
    assert leader in cluster.names, f"no leader for {QUEUE}: {cluster.queue(QUEUE)}"
    survivors = [n for n in cluster.names if n != leader]
    killed_at, t_kill = asyncio.Event(), [0.0]
    measure = asyncio.create_task(first_confirm_after(
        [cluster.url(n) for n in survivors], killed_at, t_kill, args.probe_ms / 1000, 60))
    await asyncio.sleep(1.0)  # the probe publishes through a survivor before the kill
    t_kill[0] = time.monotonic()
    cluster.kill(leader)
    killed_at.set()
    seconds = await measure
    new_leader = cluster.leader(QUEUE)
    return {"killed": leader, "new_leader": new_leader, "probe_nodes": survivors,
            "seconds": None if seconds is None else round(seconds, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--probe-ms", type=float, default=20, help="ms between probes")
    p.add_argument("--lease-ttl", type=float, help="membership lease TTL [the default, 5 s]")
    p.add_argument("--out", help="JSON file [benchmarks/results/failover-<date>.json]")
    args = p.parse_args()
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix="sb-failover-"))
    started = dt.datetime.now(dt.UTC)
    cluster = ReplicaCluster(tmp, netns=False, lease_ttl=args.lease_ttl)
    rounds: list[dict] = []
    try:
        cluster.start()
        with pika.BlockingConnection(pika.URLParameters(cluster.url("n1"))) as conn:
            conn.channel().queue_declare(QUEUE, durable=True, arguments={
                "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        for k in range(1, args.kills + 1):
            record = wait_whole(cluster)
            result = asyncio.run(one_kill(cluster, args))
            result["epoch_before"] = record.get("epoch")
            rounds.append(result)
            print(f"  kill {k}: {result['killed']} -> {result['new_leader']} in "
                  f"{result['seconds']} s", file=sys.stderr)
            cluster.restart(result["killed"])
            cluster.wait_members()
            with pika.BlockingConnection(pika.URLParameters(
                    cluster.url(result["new_leader"] or "n1"))) as conn:
                conn.channel().queue_purge(QUEUE)  # the probes: no growing log to recover
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    times = [r["seconds"] for r in rounds if r["seconds"] is not None]
    result = {"benchmark": "failover", "started": started.isoformat(timespec="seconds"),
              "machine": machine_info(), "command": " ".join(sys.argv),
              "lease_ttl_s": args.lease_ttl or "default (5)", "kills": len(rounds),
              "failed": len(rounds) - len(times),
              "median_s": round(statistics.median(times), 3) if times else None,
              "worst_s": max(times) if times else None,
              "best_s": min(times) if times else None, "rounds": rounds}
    out = Path(args.out) if args.out else \
        HERE / "results" / f"failover-{started.date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("kills", "failed", "median_s", "worst_s",
                                             "best_s")}, indent=1))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
