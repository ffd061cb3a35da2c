"""The soak's verdict: every confirmed id delivered, nothing delivered that was not
published (to that queue), duplicates and redeliveries counted, the broker log searched
for tracebacks; printed as a table and written as JSON."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from machine import loadavg, machine_info
from soak_state import QUEUES, State, now


def broker_log_errors(path: Path) -> dict:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    tb = [i for i, ln in enumerate(lines) if "Traceback" in ln]
    internal = [ln for ln in lines if "internal error" in ln.lower()]
    errs = [ln for ln in lines if " ERROR " in ln or ln.startswith("ERROR")]
    excerpts = ["\n".join(lines[max(0, i - 2): i + 25]) for i in tb[:5]]
    return {"tracebacks": len(tb), "internal_errors": len(internal), "error_lines": len(errs),
            "error_samples": errs[:10], "internal_samples": internal[:10],
            "traceback_excerpts": excerpts, "log_lines": len(lines)}


def print_table(rows: list[tuple[str, object]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in rows:
            table.add_row(k, str(v))
        Console().print(table)
    except ImportError:
        print(title)
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")


def verify(st: State, args: argparse.Namespace, seed: int, broker: dict, fatal: str | None,
           drain_results: dict, log_path: Path) -> dict:
    """The result document of a finished run (``ok`` and ``checks`` say whether it passed)."""
    with st.lock:
        attempted = dict(st.attempted)
        confirmed = set(st.confirmed)
        deliveries = {k: list(v) for k, v in st.deliveries.items()}
        acked = set(st.acked)
    delivered = set(deliveries)
    lost = sorted(confirmed - delivered)
    phantom = sorted(delivered - set(attempted))
    never_acked = sorted(confirmed - acked)
    dups = {k: v for k, v in deliveries.items() if len(v) > 1}
    dup_redelivered = sum(1 for v in dups.values() if any(r for _t, r, _e, _c in v[1:]))
    dup_same_epoch_no_flag = sorted(
        k for k, v in dups.items()
        if any(not r and e == v[i][2] for i, (_t, r, e, _c) in enumerate(v[1:])))
    unconfirmed = set(attempted) - confirmed
    safe_ack_redeliveries = st.redelivered_after_safe_ack
    safe_ack_no_kill = [r for r in safe_ack_redeliveries if not r["kill9_between"]]
    log_info = broker_log_errors(log_path)
    ok = not lost and not phantom and not st.bad_deliveries and fatal is None

    def timeline(mid: str) -> dict:
        return {"id": mid, "queue": attempted.get(mid), "deliveries": deliveries.get(mid, [])}

    result = {
        "kind": "soak",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ok": ok,
        "fatal": fatal,
        "args": {"minutes": args.minutes, "seed": seed, "producers": args.producers,
                 "consumers": args.consumers, "queues": QUEUES},
        "broker": broker,
        "machine": machine_info(),
        "loadavg_end": loadavg(),
        "counts": {
            "attempted": len(attempted),
            "confirmed": len(confirmed),
            "unconfirmed": len(unconfirmed),
            "unconfirmed_delivered": len(unconfirmed & delivered),
            "nacked": len(st.nacked),
            "unroutable": len(st.unroutable),
            "delivered_unique": len(delivered),
            "deliveries_total": sum(len(v) for v in deliveries.values()),
            "duplicates": len(dups),
            "duplicates_with_redelivered_flag": dup_redelivered,
            "duplicates_same_broker_run_without_flag": len(dup_same_epoch_no_flag),
            "redelivered_after_processed_ack": len(safe_ack_redeliveries),
            "redelivered_after_processed_ack_without_kill9": len(safe_ack_no_kill),
            "lost_confirmed": len(lost),
            "phantom": len(phantom),
            "bad_deliveries": len(st.bad_deliveries),
            "confirmed_never_acked": len(never_acked),
            "restarts_graceful": st.counts["restarts_graceful"],
            "restarts_kill9": st.counts["restarts_kill9"],
            "churn_created": st.counts["churn_created"],
            "churn_deleted": st.counts["churn_deleted"],
            "churn_interrupted_by_restart": st.counts["churn_interrupted_by_restart"],
            "producer_connections": st.counts["producer_connections"],
            "consumer_connections": st.counts["consumer_connections"],
            "consumer_drops_with_unacked": st.counts["consumer_drops_with_unacked"],
            "broker_log_tracebacks": log_info["tracebacks"],
            "broker_log_internal_errors": log_info["internal_errors"],
            "broker_log_error_lines": log_info["error_lines"],
        },
        "client_errors_while_broker_up": dict(st.errors),
        "client_counters": dict(st.counts),
        "checks": {
            "every_confirmed_delivered": not lost,
            "delivered_subset_of_attempted": not phantom,
            "deliveries_match_published_queue": not st.bad_deliveries,
        },
        "drain": drain_results,
        "samples": {
            "lost": [timeline(m) for m in lost[:20]],
            "phantom": [timeline(m) for m in phantom[:20]],
            "bad_deliveries": st.bad_deliveries[:20],
            "confirmed_never_acked": [timeline(m) for m in never_acked[:20]],
            "duplicates_same_broker_run_without_flag":
                [timeline(m) for m in dup_same_epoch_no_flag[:20]],
            "redelivered_after_processed_ack_without_kill9": safe_ack_no_kill[:20],
        },
        "broker_log": {k: v for k, v in log_info.items() if k != "log_lines"},
        "events": [e for e in st.events if not e["event"].startswith("churn")][:500]
        + [e for e in st.events if e["event"].startswith("churn")][:50],
        "elapsed_s": round(now() - st.t0, 1),
    }
    return result
