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
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "build" / "loadgen"
PREFIX = "sbbench"


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str
    title: str
    args: list[str]
    throughput: bool = True  # closed loop + consumer coalescing
    exchange: str | None = None  # exchange type when publishing through an exchange
    show_latency: bool = False  # latency is meaningful (not just backlog / rate)
    extra: dict = field(default_factory=dict)


def standard_scenarios() -> list[Scenario]:
    kib = ["-s", "1024", "--prefetch", "100"]
    return [
        Scenario("A", "1 pub -> 1 queue -> 1 con, 16 B, transient, auto-ack",
                 ["-p", "1", "-c", "1", "-s", "16", "--auto-ack"]),
        Scenario("B", "1 pub -> 1 queue -> 1 con, 1 KiB, manual ack, prefetch 100",
                 ["-p", "1", "-c", "1", *kib]),
        Scenario("C", "persistent, durable queue, confirms (window 100), 1 KiB, manual ack",
                 ["-p", "1", "-c", "1", *kib, "--durable", "--persistent", "--confirm", "100"],
                 show_latency=True),
        Scenario("D", "fanout -> 4 queues -> 4 cons, 256 B, manual ack, prefetch 100",
                 ["-p", "1", "-c", "4", "-s", "256", "--prefetch", "100", "--queues", "4"],
                 exchange="fanout"),
        Scenario("E", "latency: 1 KiB at a fixed 1000 msg/s, manual ack, prefetch 100",
                 ["-p", "1", "-c", "1", *kib, "-r", "1000"], throughput=False,
                 show_latency=True),
        Scenario("F", "4 pubs + 4 cons on 4 queues (pub i -> queue i -> con i), 1 KiB",
                 ["-p", "4", "-c", "4", *kib, "--queues", "4"]),
    ]


def sweep_scenarios() -> list[Scenario]:
    out = []
    small = ["-s", "256", "--prefetch", "100"]
    for q in (1, 10, 100, 1000):
        out.append(Scenario(f"q{q}", f"{q} queue(s), 2 pubs + 2 cons spread over them, 256 B",
                            ["-p", "2", "-c", "2", "--queues", str(q), *small]))
    for k in (1, 10, 100):
        out.append(Scenario(f"conn{k}", f"{k} pub + {k} con connections on {k} queue(s), 256 B",
                            ["-p", str(k), "-c", str(k), "--queues", str(k), *small]))
    out.append(Scenario("topic10k", "topic exchange, 10,000 bindings over 100 queues, "
                        "each message matches one binding, 1 pub + 2 cons, 256 B",
                        ["-p", "1", "-c", "2", "--queues", "100", "--bindings", "10000", *small],
                        exchange="topic"))
    return out


# --------------------------------------------------------------------------- machine


def read_cpu_times() -> tuple[int, int, int]:
    """(busy, idle, steal) jiffies summed over all CPUs."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return user + nice + system + irq + softirq, idle + iowait, steal


def busy_pct(interval: float = 1.0) -> tuple[float, float]:
    """Machine busy and steal time over `interval`, as % of one core."""
    b0, _, s0 = read_cpu_times()
    time.sleep(interval)
    b1, _, s1 = read_cpu_times()
    hz = os.sysconf("SC_CLK_TCK")
    return 100 * (b1 - b0) / hz / interval, 100 * (s1 - s0) / hz / interval


def loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def machine_info() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    osname = ""
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "os": osname, "memory": mem, "python": platform.python_version(),
            "hostname": socket.gethostname()}


def proc_cpu_s(pids: list[int]) -> float | None:
    """utime + stime of the given processes (all threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(rest[11]) + int(rest[12])
    return total / os.sysconf("SC_CLK_TCK")


def descendants(pids: list[int]) -> list[int]:
    """The pids plus every process below them (pre-forked workers and the like)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(rest[1]), []).append(int(d.name))
    seen, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(children.get(p, []))
    return sorted(seen)


def find_broker_pids(host: str, port: int) -> list[int]:
    """Processes listening on `port` (only for a broker on this machine)."""
    local = host in ("localhost", "::1", "") or host.startswith("127.")
    if not local:
        try:
            local = socket.gethostbyname(host).startswith("127.")
        except OSError:
            local = False
    if not local:
        return []
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
    return descendants(pids) if pids else []


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    url: str
    name: str
    pids: list[int]
    server: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        u = urllib.parse.urlsplit(self.url)
        return u.hostname or "localhost", u.port or 5672

    @property
    def safe_url(self) -> str:
        u = urllib.parse.urlsplit(self.url)
        netloc = f"{u.username or ''}:***@{u.hostname}:{u.port or 5672}" if u.password else u.netloc
        return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


def make_target(url: str, name: str | None, pid_arg: str | None) -> Target:
    u = urllib.parse.urlsplit(url)
    if u.scheme != "amqp":
        sys.exit(f"run.py: only amqp:// URLs are supported: {url}")
    host, port = u.hostname or "localhost", u.port or 5672
    if pid_arg == "none":
        pids = []
    elif pid_arg:
        pids = descendants([int(p) for p in pid_arg.split(",")])
    else:
        pids = find_broker_pids(host, port)
        if not pids:
            print(f"warning: no broker pid found listening on {host}:{port}; CPU columns "
                  f"will be empty (use --broker-pid)", file=sys.stderr)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        sys.exit(f"run.py: cannot reach {host}:{port}: {e}")
    return Target(url=url, name=name or "", pids=pids)


# --------------------------------------------------------------------------- running


def build_loadgen() -> None:
    r = subprocess.run(["make", "-s", "-C", str(HERE)], capture_output=True, text=True)
    if r.returncode != 0 or not LOADGEN.exists():
        sys.stderr.write(r.stdout + r.stderr)
        sys.exit("run.py: building the load generator failed; is librabbitmq-dev installed? "
                 "(apt-get install librabbitmq-dev)")


def wait_quiet(args) -> dict:
    """Wait until the machine is idle enough to start a run; report what we saw."""
    start = time.monotonic()
    while True:
        busy, steal = busy_pct(1.0)
        quiet = busy < args.quiet and steal < args.quiet
        if quiet or time.monotonic() - start >= args.quiet_max:
            if not quiet:
                print(f"    warning: machine still busy ({busy:.0f}% of a core, steal "
                      f"{steal:.0f}%) after {args.quiet_max:.0f}s; running anyway",
                      file=sys.stderr)
            return {"pre_busy_pct": round(busy, 1), "pre_steal_pct": round(steal, 1),
                    "loadavg": loadavg(), "waited_s": round(time.monotonic() - start, 1),
                    "started_quiet": quiet}


def names_for(s: Scenario) -> list[str]:
    out = ["--queue", f"{PREFIX}-{s.key}"]
    if s.exchange:
        out += ["--exchange", f"{PREFIX}-{s.key}-x", "--exchange-type", s.exchange]
    return out


def loadgen_argv(s: Scenario, t: Target, args) -> list[str]:
    argv = [str(LOADGEN), "--url", t.url, *names_for(s), *s.args, "--label", s.key,
            "--broker-pid", ",".join(map(str, t.pids)) or "none"]
    if s.throughput:
        argv += ["-d", str(args.duration), "--coalesce-us", str(args.coalesce_us)]
        if args.backlog > 0:
            argv += ["--max-backlog", str(args.backlog)]
    else:
        argv += ["-d", str(args.latency_duration)]
    return argv + list(args.loadgen_arg or [])


def run_once(s: Scenario, t: Target, args) -> dict:
    pre = wait_quiet(args)
    argv = loadgen_argv(s, t, args)
    c0 = proc_cpu_s(t.pids) if t.pids else None
    t0 = time.monotonic()
    limit = max(args.duration, args.latency_duration) + 300
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = "", f"loadgen timed out after {limit}s: {e}", -1
    wall = time.monotonic() - t0
    c1 = proc_cpu_s(t.pids) if t.pids else None
    try:
        res = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        res = {}
    if rc not in (0, 3) or "pub_rate" not in res:
        msg = res.get("error") or err.strip().splitlines()[-1:] or [f"exit status {rc}"]
        res = {"label": s.key, "error": msg if isinstance(msg, str) else msg[0]}
        # make sure nothing is left behind on the broker
        subprocess.run([str(LOADGEN), "--url", t.url, *names_for(s), *s.args, "--delete-only"],
                       capture_output=True, timeout=120)
    res.update(pre)
    res["exit_status"] = rc
    res["process_wall_s"] = round(wall, 3)
    if c0 is not None and c1 is not None:
        res["broker_cpu_s_whole_process"] = round(c1 - c0, 3)  # incl. setup/teardown
    if not t.server and res.get("server"):
        t.server = f"{res['server'].get('product', '')} {res['server'].get('version', '')}".strip()
    return res


def is_noisy(res: dict, args) -> bool:
    other = res.get("other_cpu_pct")
    return (other is not None and other > args.max_noise) or \
        (res.get("steal_pct") or 0) > args.max_noise


def run_scenario(s: Scenario, t: Target, rep: int, args) -> dict:
    best = None
    for attempt in range(1, args.retries + 2):
        res = run_once(s, t, args)
        res["rep"], res["attempt"] = rep, attempt
        noisy = is_noisy(res, args)
        res["noisy"] = noisy
        print("  " + describe(t, res), file=sys.stderr)
        if "error" in res and res["error"]:
            return res
        if best is None or (res.get("other_cpu_pct") or 0) < (best.get("other_cpu_pct") or 0):
            best = res
        if not noisy:
            break
        if attempt <= args.retries:
            print("    noisy run (other load on the machine); retrying", file=sys.stderr)
    best["attempts"] = attempt
    return best


def describe(t: Target, r: dict) -> str:
    if r.get("error"):
        return f"{t.name} {r['label']} rep {r.get('rep')}: ERROR {r['error']}"
    lat = r.get("latency_us", {})
    bc = r.get("broker_cpu_pct")
    return (f"{t.name} {r['label']} rep {r['rep']}: pub {r['pub_rate']:,.0f}/s  "
            f"deliv {r['deliv_rate']:,.0f}/s  p50 {lat.get('p50', 0) / 1000:.2f} ms  "
            f"p99 {lat.get('p99', 0) / 1000:.2f} ms  broker CPU "
            f"{'-' if bc is None else f'{bc:.0f}%'}  loadgen {r['loadgen_cpu_pct']:.0f}%  "
            f"other {r.get('other_cpu_pct') if r.get('other_cpu_pct') is not None else '-'}%"
            + ("  NOISY" if r.get("noisy") else "") + ("  INCOMPLETE" if r.get("incomplete") else ""))


# --------------------------------------------------------------------------- summary

METRICS = {
    "pub_rate": lambda r: r.get("pub_rate"),
    "deliv_rate": lambda r: r.get("deliv_rate"),
    "latency_p50_ms": lambda r: _ms(r, "latency_us", "p50"),
    "latency_p90_ms": lambda r: _ms(r, "latency_us", "p90"),
    "latency_p99_ms": lambda r: _ms(r, "latency_us", "p99"),
    "latency_p999_ms": lambda r: _ms(r, "latency_us", "p999"),
    "latency_max_ms": lambda r: _ms(r, "latency_us", "max"),
    "confirm_p50_ms": lambda r: _ms(r, "confirm_latency_us", "p50"),
    "confirm_p99_ms": lambda r: _ms(r, "confirm_latency_us", "p99"),
    "broker_cpu_pct": lambda r: r.get("broker_cpu_pct"),
    "deliv_per_broker_cpu_s": lambda r: r.get("deliv_per_broker_cpu_s"),
    "loadgen_cpu_pct": lambda r: r.get("loadgen_cpu_pct"),
    "other_cpu_pct": lambda r: r.get("other_cpu_pct"),
    "steal_pct": lambda r: r.get("steal_pct"),
}


def _ms(r: dict, key: str, p: str):
    h = r.get(key)
    if not h or not h.get("count"):
        return None
    return h[p] / 1000


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if not r.get("error")]
    med, rng = {}, {}
    for name, get in METRICS.items():
        vals = [v for v in (get(r) for r in ok) if v is not None]
        med[name] = round(statistics.median(vals), 3) if vals else None
        if vals and name in ("pub_rate", "deliv_rate", "deliv_per_broker_cpu_s",
                             "latency_p50_ms", "latency_p99_ms"):
            rng[name] = [round(min(vals), 3), round(max(vals), 3)]
    return {"median": med, "range": rng, "ok_runs": len(ok),
            "failed_runs": len(runs) - len(ok),
            "noisy_runs": sum(1 for r in ok if r.get("noisy")),
            "incomplete_runs": sum(1 for r in ok if r.get("incomplete")),
            "errors": sorted({r["error"] for r in runs if r.get("error")})}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


COLUMNS = [("deliv msg/s", "deliv_rate", 0), ("pub msg/s", "pub_rate", 0),
           ("p50 ms", "latency_p50_ms", 2), ("p99 ms", "latency_p99_ms", 2),
           ("broker CPU %", "broker_cpu_pct", 0), ("deliv/CPU-s", "deliv_per_broker_cpu_s", 0),
           ("loadgen %", "loadgen_cpu_pct", 0), ("other %", "other_cpu_pct", 0)]


def fmt(v, nd):
    return "-" if v is None else f"{v:,.{nd}f}"


def table_rows(scens: list[Scenario], targets: list[Target], summary: dict) -> list[list[str]]:
    rows = []
    for s in scens:
        per = [summary[t.name].get(s.key) for t in targets]
        if not any(per):
            continue
        for t, sm in zip(targets, per, strict=True):
            if not sm:
                continue
            m = sm["median"]
            cells = []
            for _, key, nd in COLUMNS:
                v = m[key]
                if key.startswith("latency") and not s.show_latency:
                    v = None
                cells.append(fmt(v, nd))
            flags = []
            if sm["noisy_runs"]:
                flags.append(f"!{sm['noisy_runs']} noisy")
            if sm["incomplete_runs"]:
                flags.append(f"!{sm['incomplete_runs']} incomplete")
            if sm["failed_runs"]:
                flags.append(f"!{sm['failed_runs']} failed")
            rows.append([s.key, t.name, *cells, " ".join(flags)])
        if len(targets) == 2 and all(per):
            a, b = per[0]["median"], per[1]["median"]
            cells = []
            for _, key, _nd in COLUMNS:
                r = ratio(a[key], b[key])
                if key.startswith("latency") and not s.show_latency:
                    r = None
                cells.append("-" if r is None else f"{r:.2f}x")
            rows.append([s.key, f"{targets[0].name}/{targets[1].name}", *cells, ""])
    return rows


def print_table(title: str, rows: list[list[str]], plain: bool) -> None:
    headers = ["", "broker", *[c[0] for c in COLUMNS], ""]
    if not plain and sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain and sys.stdout.isatty():
        tab = Table(title=title)
        for i, h in enumerate(headers):
            tab.add_column(h, justify="right" if 2 <= i < len(headers) - 1 else "left")
        for r in rows:
            tab.add_row(*r)
        Console().print(tab)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print(title)
    line = "  ".join(h.rjust(w) if 2 <= i < len(headers) - 1 else h.ljust(w)
                     for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.rjust(w) if 2 <= i < len(r) - 1 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))


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
    pool = sweep_scenarios() if args.sweep else standard_scenarios()
    if not args.scenarios:
        return pool
    want = args.scenarios.split(",") if "," in args.scenarios or not args.scenarios.isalpha() \
        or not args.scenarios.isupper() else list(args.scenarios)
    by_key = {s.key: s for s in standard_scenarios() + sweep_scenarios()}
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

    name = "-vs-".join(t.name for t in targets) + ("-sweep" if args.sweep else "")
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
