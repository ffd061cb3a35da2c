"""Medians over the repetitions, ratios between two brokers, and the table run.py prints."""

from __future__ import annotations

import statistics
import sys

from runner import Target
from scenarios import Scenario

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
