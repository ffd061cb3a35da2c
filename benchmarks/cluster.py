#!/usr/bin/env python3
"""Issue 15's cluster benchmarks, each side by side in one run, brokers started here.

- ``F``: scenario F (4 publishers -> 4 queues -> 4 consumers, 1 KiB, prefetch 100) on one
  node and on ``serve --workers 2`` (one AMQP port, SO_REUSEPORT), runs alternating, with
  durable queues and ``x-queue-leader-locator=balanced`` (two queues per worker; messages
  transient as in run.py's F). run.py's F declares non-durable queues, which exist on
  their declaring node only (not in etcd), so half the connections could not reach them.
  The kernel spreads the connections of each run over the workers at random; each then
  moves, at its first publish or basic.consume, to the worker leading its queue (its
  socket handed over, server/handoff.py), so after that nothing crosses the link; each
  run's ``connections_moved`` says how many of the 8 moved.
- ``forward``: two nodes (separate ports), the queue led by node 2; 1 publisher, 1
  consumer (1 KiB, prefetch 100) through node 2 (the leader) and through node 1 (every
  publish, delivery and ack crosses the link). msg/s and each node's CPU.
- ``declare``: queue.declare per second (durable, distinct names) on one node and on a
  cluster node (one etcd commit per declare), from one connection (each declare waits for
  its -ok) and from 4 connections at once (their commits share etcd transactions).

    .venv/bin/python benchmarks/cluster.py                        # all three, reps 3
    .venv/bin/python benchmarks/cluster.py --only F --duration 3 --reps 1

The CPU columns are the brokers' processes (for the workers: the supervisor, both
workers and etcd). Results go to benchmarks/results/cluster-<date>.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import pika  # noqa: E402  (after the path: run from a checkout)
from machine import descendants, machine_info, proc_cpu_s  # noqa: E402
from runner import Target, build_loadgen, run_once  # noqa: E402
from scenarios import Scenario, standard_scenarios  # noqa: E402

from smartbroker.cluster.etcd_process import EtcdProcess  # noqa: E402
from smartbroker.launcher import HOST, BrokerProcess, free_port, port_open  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BALANCED = ["--durable", "--queue-arg", "x-queue-leader-locator=balanced"]


class Workers:
    """``smartbroker serve --workers 2`` in a directory, on free ports."""

    def __init__(self, directory: Path, count: int = 2) -> None:
        self.port, self.http = free_port(), free_port()
        self.log_path = directory / "workers.log"
        self.command = [sys.executable, "-m", "smartbroker", "serve", "--workers", str(count),
                        "--host", HOST, "--port", str(self.port), "--management-port",
                        str(self.http), "--prometheus-port", "0", "--kafka-port", "0",
                        "--log-level", "warning", "--data-dir", str(directory / "data")]
        self.count = count
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    def start(self) -> Workers:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        # serving once etcd and every worker are children and worker 0's API answers
        # with every node up
        while not self._all_up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve --workers did not start; see {self.log_path}")
            time.sleep(0.1)
        return self

    def _all_up(self) -> bool:
        if not port_open(HOST, self.http):
            return False
        try:
            nodes = get_json(self.http, "/api/nodes")
        except (OSError, ValueError):
            return False
        assert isinstance(nodes, list)
        return sum(1 for n in nodes if n.get("running")) == self.count

    def pids(self) -> list[int]:
        assert self.proc is not None
        return descendants([self.proc.pid])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its children stop with their lost parent's etcd
                self.proc.wait()


def get_json(port: int, path: str) -> object:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=AUTH)
    with DIRECT.open(req, timeout=5) as resp:
        return json.loads(resp.read())


def handovers(http: int) -> int:
    """Connections the workers handed to the worker leading their queue so far (each
    worker's own /api/nodes/{name}; 0 for a single node, which has no such counter)."""
    nodes = get_json(http, "/api/nodes")
    assert isinstance(nodes, list)
    total = 0
    for node in nodes:
        if node.get("running"):
            info = get_json(node.get("http_port", http), f"/api/nodes/{node['name']}")
            assert isinstance(info, dict)
            total += info.get("connections_handed_over", 0)
    return total


def predeclare(url: str, http: int, names: list[str], durable: bool,
               arguments: dict) -> None:
    """Declare the queues on one connection and wait until every node lists them, so
    loadgen's connections, landing on either node, all find them (a queue is 404 on a
    node whose etcd watch has not brought it yet: a known race, docs/cluster.md)."""
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        for name in names:
            ch.queue_declare(name, durable=durable, arguments=arguments)
    nodes = get_json(http, "/api/nodes")
    assert isinstance(nodes, list)
    ports = [n.get("http_port", http) for n in nodes if n.get("running")]
    deadline = time.monotonic() + 30
    for port in ports:
        while not set(names) <= {q["name"] for q in get_json(port, "/api/queues")}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queues {names} not on every node after 30 s")
            time.sleep(0.05)


def loadgen_args(args: argparse.Namespace) -> argparse.Namespace:
    """What runner.run_once reads (run.py's defaults, shorter waits for a quiet machine)."""
    return argparse.Namespace(duration=args.duration, latency_duration=args.duration,
                              coalesce_us=500, backlog=5000, loadgen_arg=[], quiet=20,
                              quiet_max=args.quiet_max)


def summary(runs: list[dict], keys: tuple[str, ...]) -> dict:
    ok = [r for r in runs if not r.get("error")]
    out: dict = {"runs": len(runs), "errors": [r["error"] for r in runs if r.get("error")]}
    for key in keys:
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = round(statistics.median(values), 1) if values else None
    return out


def bench_f(args: argparse.Namespace, tmp: Path) -> dict:
    base = next(s for s in standard_scenarios() if s.key == "F")
    # durable queues only: a non-durable queue is not in etcd, so it exists on its
    # declaring node alone and connections landing on the other worker cannot reach it
    variants = {"F-durable-balanced": [*base.args, *BALANCED]}
    single = BrokerProcess(tmp / "single" / "data", log_level="warning")
    (tmp / "workers").mkdir(parents=True, exist_ok=True)
    workers = Workers(tmp / "workers")
    lg = loadgen_args(args)
    results: dict = {}
    try:
        single.start()
        workers.start()
        targets = {"one node": Target(single.url, "one node", descendants([single.pid])),
                   "--workers 2": Target(workers.url, "--workers 2", workers.pids())}
        https = {"one node": single.management_port, "--workers 2": workers.http}
        for key, scenario_args in variants.items():
            scenario = Scenario(key, base.title, [*scenario_args, "--keep"])
            durable = "--durable" in scenario_args
            for name, target in targets.items():
                predeclare(target.url, https[name], [f"sbbench-{key}-{i}" for i in range(4)],
                           durable, {"x-queue-leader-locator": "balanced"} if durable else {})
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            for rep in range(1, args.reps + 1):
                for name, target in targets.items():
                    moved = handovers(https[name])
                    res = run_once(scenario, target, lg)
                    res["rep"] = rep
                    res["connections_moved"] = handovers(https[name]) - moved  # of 8
                    runs[name].append(res)
                    print(f"  {key} {name} rep {rep}: pub {res.get('pub_rate', 0):,.0f}/s "
                          f"deliv {res.get('deliv_rate', 0):,.0f}/s broker CPU "
                          f"{res.get('broker_cpu_pct', '-')}% {res.get('error') or ''}",
                          file=sys.stderr)
            results[key] = {name: {**summary(r, ("pub_rate", "deliv_rate", "broker_cpu_pct")),
                                   "raw": r} for name, r in runs.items()}
            one, two = (results[key][n]["deliv_rate"] for n in targets)
            results[key]["ratio"] = round(two / one, 2) if one and two else None
    finally:
        workers.stop()
        single.stop()
    return results


@contextlib.contextmanager
def two_nodes(tmp: Path):
    etcd = EtcdProcess(tmp / "etcd").start()
    nodes = [BrokerProcess(tmp / f"n{i}" / "data", etcd=etcd.endpoint, node_name=f"n{i}",
                           cluster_name="bench", log_level="warning") for i in (1, 2)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        etcd.stop()


def bench_forward(args: argparse.Namespace, tmp: Path) -> dict:
    b = next(s for s in standard_scenarios() if s.key == "B")
    scenario = Scenario("FWD", "1 pub -> 1 queue (led by n2) -> 1 con, 1 KiB, prefetch 100",
                        [*b.args, "--durable", "--keep"])
    lg = loadgen_args(args)
    with two_nodes(tmp) as (n1, n2):
        with pika.BlockingConnection(pika.URLParameters(n2.url)) as conn:  # placed on n2
            conn.channel().queue_declare("sbbench-FWD", durable=True)
        runs: dict[str, list[dict]] = {"via n2 (leader)": [], "via n1 (forwarded)": []}
        pids = {n.node_name: descendants([n.pid]) for n in (n1, n2)}
        for rep in range(1, args.reps + 1):
            for name, node in (("via n2 (leader)", n2), ("via n1 (forwarded)", n1)):
                target = Target(node.url, name, pids["n1"] + pids["n2"])
                before = {k: proc_cpu_s(v) for k, v in pids.items()}
                res = run_once(scenario, target, lg)
                after = {k: proc_cpu_s(v) for k, v in pids.items()}
                wall = res.get("process_wall_s") or 1
                for k in pids:  # each node's share of a core over the loadgen run
                    res[f"{k}_cpu_pct"] = round(100 * (after[k] - before[k]) / wall, 1)
                res["rep"] = rep
                runs[name].append(res)
                print(f"  forward {name} rep {rep}: deliv {res.get('deliv_rate', 0):,.0f}/s "
                      f"n1 CPU {res['n1_cpu_pct']}% n2 CPU {res['n2_cpu_pct']}% "
                      f"{res.get('error') or ''}", file=sys.stderr)
    keys = ("pub_rate", "deliv_rate", "broker_cpu_pct", "n1_cpu_pct", "n2_cpu_pct")
    out: dict = {name: {**summary(r, keys), "raw": r} for name, r in runs.items()}
    leader, forwarded = (out[n]["deliv_rate"] for n in runs)
    out["fraction"] = round(forwarded / leader, 2) if leader and forwarded else None
    return out


def declare_rate(url: str, count: int, connections: int, tag: str) -> float:
    """queue.declare -ok per second: ``connections`` clients, ``count`` declares in all."""
    conns = [pika.BlockingConnection(pika.URLParameters(url)) for _ in range(connections)]
    per = count // connections

    def run(i: int) -> None:
        ch = conns[i].channel()
        for j in range(per):
            ch.queue_declare(f"decl-{tag}-{i}-{j}", durable=True)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = per * connections / (time.perf_counter() - t0)
    ch = conns[0].channel()
    for i in range(connections):
        for j in range(per):
            ch.queue_delete(f"decl-{tag}-{i}-{j}")
    for c in conns:
        c.close()
    return rate


def bench_declare(args: argparse.Namespace, tmp: Path) -> dict:
    single = BrokerProcess(tmp / "dsingle" / "data", log_level="warning")
    out: dict = {}
    try:
        single.start()
        with two_nodes(tmp / "dcluster") as (n1, _n2):
            for connections in (1, 4):
                rates: dict[str, list[float]] = {"one node": [], "cluster node": []}
                for rep in range(args.reps):
                    for name, node in (("one node", single), ("cluster node", n1)):
                        rate = declare_rate(node.url, args.declares, connections,
                                            f"{connections}-{rep}")
                        rates[name].append(round(rate, 1))
                        print(f"  declare x{connections} {name} rep {rep + 1}: {rate:,.0f}/s",
                              file=sys.stderr)
                out[f"{connections} connection(s)"] = {
                    name: {"median": statistics.median(r), "raw": r}
                    for name, r in rates.items()}
    finally:
        single.stop()
    return out


def without_raw(value: object) -> object:
    """The medians only, for the terminal (the JSON file keeps every run)."""
    if isinstance(value, dict):
        return {k: without_raw(v) for k, v in value.items() if k != "raw"}
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated: F, forward, declare [all]")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=5, help="publish seconds per run")
    p.add_argument("--declares", type=int, default=400, help="queue.declares per measure")
    p.add_argument("--quiet-max", type=float, default=5,
                   help="seconds to wait for a quiet machine before each run")
    p.add_argument("--out", help="JSON file [benchmarks/results/cluster-<date>.json]")
    args = p.parse_args()
    only = set((args.only or "F,forward,declare").split(","))
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="sb-cluster-bench-"))
    started = dt.datetime.now(dt.UTC)
    result: dict = {"benchmark": "cluster", "started": started.isoformat(timespec="seconds"),
                    "machine": machine_info(), "command": " ".join(sys.argv),
                    "reps": args.reps, "duration_s": args.duration}
    try:
        if "F" in only:
            result["F"] = bench_f(args, tmp)
        if "forward" in only:
            result["forward"] = bench_forward(args, tmp / "fwd")
        if "declare" in only:
            result["declare"] = bench_declare(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out) if args.out else \
        HERE / "results" / f"cluster-{started.date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: without_raw(result[k]) for k in ("F", "forward", "declare")
                      if k in result}, indent=1))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
