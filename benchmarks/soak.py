#!/usr/bin/env python3
"""Soak test for smartbroker: reconnecting clients, broker restarts, queue churn.

Starts its own smartbroker subprocess (free ports, temporary data dir) and for --minutes:

* producers (threads, pika BlockingConnection, publisher confirms, mandatory, persistent)
  publish to a few durable queues; every body carries a unique id ``p<N>:<seq>`` and the
  queue name. Each producer reconnects after a random short lifetime (sometimes closing
  cleanly, sometimes dropping the socket) and after every broker restart. A publish whose
  confirm did not arrive (connection lost, nack) is "unconfirmed": it may or may not be
  delivered;
* consumers (manual ack, prefetch 50) on all those queues, reconnecting randomly (clean
  close or socket drop, sometimes with deliveries left unacked, sometimes pausing a few
  seconds so that a backlog builds up); every delivery is recorded with its redelivered
  flag;
* a chaos loop restarts the broker every 20-60 s, alternating graceful (SIGTERM) and
  ``kill -9``, on the same ports and data dir;
* a churn loop declares short-lived queues, publishes a few messages, gets them back and
  deletes the queue through its own connection; an operation that fails while the broker
  was up the whole time is an error.

At the end producers stop, consumers drain the queues, the broker is restarted gracefully
once more and the queues are drained again. Then:

1. every confirmed id must have been delivered at least once;
2. every delivered id must have been published (delivered is a subset of attempted), to
   the queue it was delivered from.

Exit code 0 when both hold. Also reported: confirmed ids never acked, duplicates (and how
many carried redelivered=true), ids delivered again after their ack was known to be
processed (the connection closed cleanly afterwards), restarts, churn, tracebacks in the
broker log. Writes JSON (default ``benchmarks/results/soak-<date>.json``).

    .venv/bin/python benchmarks/soak.py --minutes 10
    .venv/bin/python benchmarks/soak.py --minutes 1 --seed 7 --tree /tmp/soak-tree

``--tree`` selects the source tree whose ``smartbroker`` package the broker runs from
(default: this checkout).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from soak_broker import Broker, chaos, drain, restart  # noqa: E402
from soak_clients import churn, consumer, producer  # noqa: E402
from soak_report import print_table, verify  # noqa: E402
from soak_state import State, now  # noqa: E402

logging.getLogger("pika").setLevel(logging.CRITICAL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="source tree the broker runs from (PYTHONPATH and cwd)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir and log")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    tree = args.tree.resolve()
    probe = subprocess.run([sys.executable, "-c", "import smartbroker; print(smartbroker.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                           capture_output=True, text=True, timeout=30)
    broker_pkg = probe.stdout.strip()
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    data_dir, log_path = tmp / "data", tmp / "broker.log"
    data_dir.mkdir()
    broker = Broker(tree, data_dir, log_path)
    print(f"soak: seed={seed} minutes={args.minutes} broker={broker_pkg} commit={commit[:12]} "
          f"ports={broker.port}/{broker.management_port} dir={tmp}", flush=True)
    st = State(seed)
    hard_deadline = now() + args.minutes * 60 + 110  # everything done within minutes + 2
    broker.start()
    st.up.set()
    st.event("started")

    threads = [threading.Thread(target=producer, args=(st, broker, i), daemon=True,
                                name=f"producer{i}") for i in range(args.producers)]
    cthreads = [threading.Thread(target=consumer, args=(st, broker, i), daemon=True,
                                 name=f"consumer{i}") for i in range(args.consumers)]
    churner = threading.Thread(target=churn, args=(st, broker), daemon=True, name="churn")
    for th in [*threads, *cthreads, churner]:
        th.start()
    end_load = now() + args.minutes * 60
    last_report = now()
    chaos_thread = threading.Thread(target=chaos, args=(st, broker, end_load - 5), daemon=True,
                                    name="chaos")
    chaos_thread.start()
    fatal = None
    while now() < end_load:
        time.sleep(1)
        if st.chaos_failure and fatal is None:
            fatal = f"chaos loop failed: {st.chaos_failure}"
            break
        if now() - last_report >= 30:
            last_report = now()
            with st.lock:
                print(f"  t={st.t():6.0f}s attempted={len(st.attempted)} "
                      f"confirmed={len(st.confirmed)} delivered={len(st.deliveries)} "
                      f"restarts={st.counts['restarts_graceful']}+{st.counts['restarts_kill9']} "
                      f"churn={st.counts['churn_created']} errors={sum(st.errors.values())}",
                      flush=True)
    st.stop_producers.set()
    chaos_thread.join(max(1.0, min(120.0, hard_deadline - now() - 60)))
    if chaos_thread.is_alive():
        fatal = fatal or "chaos restart still running at the end"
    for th in [*threads, churner]:
        th.join(15)
    stuck = [th.name for th in [*threads, churner] if th.is_alive()]
    st.event("producers_stopped", stuck=stuck)
    print("  producers stopped; draining", flush=True)
    st.draining.set()
    drain_results = {}
    try:
        if not broker.alive() or not st.up.is_set():
            broker.start()
            st.up.set()
        drain_results["first"] = drain(st, broker, min(now() + 45, hard_deadline - 40), "first")
        restart(st, broker, "graceful")
        drain_results["after_final_restart"] = drain(st, broker, hard_deadline - 10, "final")
    except Exception as e:  # noqa: BLE001
        fatal = fatal or f"drain: {e!r}"
    st.stop_all.set()
    for th in cthreads:
        th.join(10)
    try:
        secs, rc = broker.stop(20)
        st.event("final_stop", seconds=round(secs, 3), rc=rc)
        if rc != 0:
            st.error(f"broker:final-exit-{rc}")
    except Exception:  # noqa: BLE001
        pass
    result = verify(st, args, seed, {"package": broker_pkg, "commit": commit}, fatal,
                    drain_results, log_path)
    ok = result["ok"]
    out = args.out or HERE / "results" / f"soak-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    rows = [(k, v) for k, v in result["counts"].items()]
    rows += [("client errors (broker up)", sum(st.errors.values())),
             ("elapsed s", result["elapsed_s"]), ("seed", seed),
             ("RESULT", "PASS" if ok else f"FAIL {fatal or ''}")]
    print_table(rows, f"smartbroker soak, {args.minutes:g} min")
    if st.errors:
        print("client errors while the broker was up:", dict(st.errors))
    print(f"wrote {out}; broker log {log_path}")
    if not args.keep and ok and not result["counts"]["broker_log_tracebacks"]:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
