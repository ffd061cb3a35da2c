#!/usr/bin/env python3
"""Benchmark runner for smartbroker (or any AMQP 0-9-1 broker).

Builds the C load generator on first use (``make -C benchmarks``), runs the
standard scenarios A-F (or the scale sweep) against one broker, or against two
brokers alternately with ``--compare``, and prints a table of medians.

    python benchmarks/run.py --url amqp://guest:guest@localhost:5672/
    python benchmarks/run.py --url amqp://guest:guest@localhost:5673/ \\
        --compare amqp://guest:guest@localhost:5672/ --reps 3
    python benchmarks/run.py --sweep --duration 3

Standard library only; uses ``rich`` for the table when it is installed.
See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_info, proc_cpu_s
from report import METRICS, print_table, ratio, summarize, table_rows
from runner import HERE, build_loadgen, make_target, run_scenario
from scenarios import Scenario, standard_scenarios, stream_scenarios, sweep_scenarios

# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="amqp://guest:guest@localhost:5672/",
                   help="broker under test [%(default)s]")
    p.add_argument("--name", help="short name for --url (default: from the server product)")
    p.add_argument("--broker-pid", help="pid(s) of the --url broker, comma-separated, or 'none' "
                   "(default: whoever listens on the port, plus its child processes)")
    p.add_argument("--compare", metavar="URL2", help="second broker, run alternately with --url")
    p.add_argument("--name2", help="short name for --compare")
    p.add_argument("--broker-pid2", help="like --broker-pid, for --compare")
    p.add_argument("--scenarios", help="subset to run: letters (ABCDEF) or comma-separated keys "
                   "(q1,q10,conn1,topic10k)")
    p.add_argument("--sweep", action="store_true",
                   help="run the scale sweep (1/10/100/1000 queues; 1/10/100 connection pairs; "
                   "10,000 topic bindings) instead of A-F")
    p.add_argument("--streams", action="store_true",
                   help="run issue 14's stream scenarios (S1 1 KiB confirms, S1p the same "
                   "persistent, S2 128 B, S4 four readers, SB B on a stream) instead of A-F; "
                   "add B to compare with classic")
    p.add_argument("--reps", type=int, default=3, help="repetitions per scenario [%(default)s]")
    p.add_argument("--duration", type=float, default=5, help="publish seconds [%(default)s]")
    p.add_argument("--latency-duration", type=float, default=10,
                   help="publish seconds for the fixed-rate scenario E [%(default)s]")
    p.add_argument("--backlog", type=int, default=5000,
                   help="closed-loop bound on outstanding deliveries, 0 = open loop "
                   "[%(default)s]")
    p.add_argument("--coalesce-us", type=int, default=500,
                   help="consumer pause after draining its socket, throughput runs only "
                   "[%(default)s]")
    p.add_argument("--quiet", type=float, default=20,
                   help="wait before each run until the machine is below this %% of one core "
                   "busy [%(default)s]")
    p.add_argument("--quiet-max", type=float, default=60,
                   help="...but wait at most this many seconds [%(default)s]")
    p.add_argument("--max-noise", type=float, default=25,
                   help="a run is noisy when other processes used more than this %% of a core "
                   "[%(default)s]")
    p.add_argument("--retries", type=int, default=1,
                   help="rerun a noisy run up to N times, keep the quietest [%(default)s]")
    p.add_argument("--out", help="JSON results file [benchmarks/results/<name>-<date>.json]")
    p.add_argument("--plain", action="store_true", help="plain-text table even if rich exists")
    p.add_argument("--loadgen-arg", action="append",
                   help="extra argument passed to every loadgen run (repeatable)")
    return p.parse_args(argv)


def select(args) -> list[Scenario]:
    pool = sweep_scenarios() if args.sweep else stream_scenarios() if args.streams \
        else standard_scenarios()
    if not args.scenarios:
        return pool
    by_key = {s.key: s for s in standard_scenarios() + sweep_scenarios() + stream_scenarios()}
    want = [args.scenarios] if args.scenarios in by_key else args.scenarios.split(",") \
        if "," in args.scenarios or not args.scenarios.isalpha() \
        or not args.scenarios.isupper() else list(args.scenarios)
    bad = [w for w in want if w not in by_key]
    if bad:
        sys.exit(f"run.py: unknown scenario(s) {bad}; known: {', '.join(by_key)}")
    return [by_key[w] for w in want]


def main(argv=None) -> int:
    args = parse_args(argv)
    scens = select(args)
    build_loadgen()
    targets = [make_target(args.url, args.name, args.broker_pid)]
    if args.compare:
        targets.append(make_target(args.compare, args.name2, args.broker_pid2))
    for i, t in enumerate(targets):
        if not t.name:
            t.name = f"broker{i + 1}"  # replaced by the server product after the first run
    started = dt.datetime.now(dt.UTC)
    raw: dict[str, dict[str, list]] = {t.name: {} for t in targets}
    idle = {}
    for t in targets:
        if t.pids:
            a = proc_cpu_s(t.pids)
            time.sleep(2)
            b = proc_cpu_s(t.pids)
            idle[t.name] = None if a is None or b is None else round(50 * (b - a), 1)
    print(f"scenarios {' '.join(s.key for s in scens)}; {args.reps} rep(s); "
          + "; ".join(f"{t.name} = {t.safe_url} (pids {t.pids or '-'})" for t in targets),
          file=sys.stderr)
    for rep in range(1, args.reps + 1):
        order = targets if rep % 2 else list(reversed(targets))  # ABBA: cancel drift
        for s in scens:
            for t in order:
                raw[t.name].setdefault(s.key, []).append(run_scenario(s, t, rep, args))

    # Names from the server product, once we know it ("rabbitmq", "smartbroker").
    renamed = {}
    for t, given in zip(targets, [args.name, args.name2][:len(targets)], strict=True):
        if not given and t.server:
            base = t.server.split()[0].lower()
            new = base if base not in renamed.values() else f"{base}-2"
            renamed[t.name] = new
            raw[new] = raw.pop(t.name)
            idle[new] = idle.pop(t.name, None)
            t.name = new
    summary = {t.name: {k: summarize(v) for k, v in raw[t.name].items()} for t in targets}
    ratios = {}
    if len(targets) == 2:
        for s in scens:
            a, b = summary[targets[0].name].get(s.key), summary[targets[1].name].get(s.key)
            if a and b:
                ratios[s.key] = {k: ratio(a["median"][k], b["median"][k]) for k in METRICS}

    title = (f"median of {args.reps} rep(s); throughput runs {args.duration:g}s closed loop "
             f"(backlog {args.backlog}), E {args.latency_duration:g}s; CPU in % of one core")
    print()
    print_table(title, table_rows(scens, targets, summary), args.plain)
    if len(targets) == 2:
        print(f"ratio rows: {targets[0].name} / {targets[1].name} (>1 means {targets[0].name} "
              "is higher: better for msg/s and deliv/CPU-s, worse for latency and CPU)")

    name = "-vs-".join(t.name for t in targets) + ("-sweep" if args.sweep else "") \
        + ("-streams" if args.streams else "")
    out = Path(args.out) if args.out else \
        HERE / "results" / f"{name}-{started.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    doc = {
        "name": name,
        "date": started.isoformat(timespec="seconds"),
        "repo_commit": commit,
        "machine": machine,
        "targets": [{"name": t.name, "url": t.safe_url, "server": t.server,
                     "broker_pids": t.pids, "broker_idle_cpu_pct": idle.get(t.name)}
                    for t in targets],
        "method": {
            "reps": args.reps, "statistic": "median over reps, each metric on its own",
            "order": "alternating per scenario, order reversed on every other rep",
            "duration_s": args.duration, "latency_duration_s": args.latency_duration,
            "closed_loop_backlog": args.backlog, "consumer_coalesce_us": args.coalesce_us,
            "quiet_threshold_pct": args.quiet, "max_noise_pct": args.max_noise,
            "retries": args.retries, "loadgen": "benchmarks/loadgen/loadgen.c",
        },
        "scenarios": {s.key: {"title": s.title, "args": s.args, "throughput": s.throughput,
                              "exchange": s.exchange} for s in scens},
        "summary": summary,
        "ratios": ratios,
        "runs": raw,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    failed = sum(sm["failed_runs"] for per in summary.values() for sm in per.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
