#!/usr/bin/env python3
"""One run of scenario C against a quorum queue on three nodes, with each node's CPU:
the quick check used while working on the replicated path (``benchmarks/quorum.py`` is
the side-by-side measurement with classic and RabbitMQ).

    .venv/bin/python benchmarks/quorum_once.py              # 6 s, prints the load
    .venv/bin/python benchmarks/quorum_once.py 10 --profile  # + py-spy of each node
                                                              #   (/tmp/quorum-once-<node>.txt)

Prints the load generator's JSON (msg/s, latency and confirm-latency percentiles) and
each node's user and system CPU-seconds over the run (idle ones first, over 5 s).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pika
from quorum import QUORUM_ARGS, queue_of, scenarios, wait_replicated
from replica_cluster import ReplicaCluster
from runner import LOADGEN, build_loadgen
from scenarios import names_for

HERE = Path(__file__).resolve().parent


def cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU-seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / 100, int(fields[12]) / 100


def spent(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
          ) -> dict[str, tuple[float, float]]:
    return {n: (round(after[n][0] - before[n][0], 2), round(after[n][1] - before[n][1], 2))
            for n in before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seconds", nargs="?", default="6", help="publishing time [6]")
    p.add_argument("--profile", action="store_true", help="py-spy each node (raw format)")
    args = p.parse_args()
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="quorum-once-"))
    cluster = ReplicaCluster(tmp / "cluster", netns=False)
    _, scenario = scenarios()
    try:
        cluster.start()
        with pika.BlockingConnection(pika.URLParameters(cluster.url("n1"))) as conn:
            conn.channel().queue_declare(queue_of(scenario), durable=True,
                                         arguments=QUORUM_ARGS)
        print("replica set:", wait_replicated(cluster, queue_of(scenario)))
        pids = cluster.pids()
        idle = {n: cpu(pid) for n, pid in pids.items()}
        time.sleep(5)
        before = {n: cpu(pid) for n, pid in pids.items()}
        print("idle 5 s (user, sys):", spent(idle, before))
        spies = [subprocess.Popen([str(HERE.parent / ".venv/bin/py-spy"), "record", "-r", "100",
                                   "-d", args.seconds, "-o", f"/tmp/quorum-once-{n}.txt",
                                   "--format", "raw", "--pid", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, pid in pids.items()] if args.profile else []
        out = subprocess.run([str(LOADGEN), "--url", cluster.url("n1"), *names_for(scenario),
                              *scenario.args, "--max-backlog", "5000", "-d", args.seconds],
                             capture_output=True, text=True, check=False)
        after = {n: cpu(pid) for n, pid in pids.items()}
        print(out.stdout, out.stderr[-500:])
        print("run (user, sys):", spent(before, after))
        for spy in spies:
            spy.wait()
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
