"""One scenario against one broker: find the broker and its processes, wait for a quiet
machine, run the load generator, retry noisy runs, describe each run in one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from machine import busy_pct, descendants, find_broker_pids, loadavg, proc_cpu_s
from scenarios import Scenario, names_for

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "build" / "loadgen"


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
