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
import contextlib
import datetime as dt
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import pika  # noqa: E402
import pika.exceptions as pex  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402
from machine import loadavg, machine_info  # noqa: E402

QUEUES = ["soak.q0", "soak.q1", "soak.q2"]

logging.getLogger("pika").setLevel(logging.CRITICAL)




def now() -> float:
    return time.monotonic()


# ----------------------------------------------------------------------------- broker


class Broker(BrokerProcess):
    """The soak's broker: runs from ``tree``, ready once the management API answers."""

    def __init__(self, tree: Path, data_dir: Path, log_path: Path) -> None:
        super().__init__(data_dir, log_path, tree=tree)

    def params(self, **kw) -> pika.ConnectionParameters:
        base = dict(host="127.0.0.1", port=self.port, connection_attempts=1, socket_timeout=3,
                    stack_timeout=5, blocked_connection_timeout=15, heartbeat=5)
        base.update(kw)
        return pika.ConnectionParameters(**base)

    def start(self, timeout: float = 90.0, wait_api: bool = True) -> float:
        return super().start(timeout, wait_api)

    def stop(self, timeout: float = 60.0) -> tuple[float, int | None]:
        return super().stop(timeout)


# ----------------------------------------------------------------------------- state


class State:
    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.t0 = now()
        self.stop_producers = threading.Event()
        self.stop_all = threading.Event()
        self.draining = threading.Event()
        self.up = threading.Event()
        self.epoch = 0  # incremented at every stop and every start
        self.kill_epochs: set[int] = set()  # epoch values that ended with a kill -9
        self.seed = seed
        self.attempted: dict[str, str] = {}  # id -> queue
        self.confirmed: set[str] = set()
        self.nacked: set[str] = set()
        self.unroutable: set[str] = set()
        # id -> list of (t, redelivered, epoch, consumer connection key)
        self.deliveries: dict[str, list[tuple[float, bool, int, str]]] = defaultdict(list)
        self.bad_deliveries: list[dict] = []  # queue mismatch / undecodable bodies
        self.acked: set[str] = set()
        self.ack_safe: dict[str, tuple[float, int]] = {}  # id -> (t, epoch) ack known processed
        self.redelivered_after_safe_ack: list[dict] = []
        self.events: list[dict] = []
        self.errors: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.last_delivery = now()
        self.chaos_failure: str | None = None

    def t(self) -> float:
        return round(now() - self.t0, 3)

    def event(self, kind: str, **kw) -> None:
        with self.lock:
            self.events.append({"t": self.t(), "event": kind, **kw})

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n


def sleep_unless(ev: threading.Event, seconds: float) -> bool:
    """Sleep; True if ``ev`` got set."""
    return ev.wait(max(0.0, seconds))


def drop_socket(conn: pika.BlockingConnection) -> None:
    """Abrupt disconnect (no connection.close handshake), like a crashed client."""
    with contextlib.suppress(Exception):
        conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # noqa: SLF001 - deliberate
    with contextlib.suppress(Exception):
        conn.close()


# ----------------------------------------------------------------------------- producer


def producer(st: State, broker: Broker, n: int) -> None:
    rng = random.Random(st.seed * 1000 + n)
    seq = 0
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain")
    while not st.stop_producers.is_set():
        if not st.up.wait(0.5):
            continue
        try:
            conn = pika.BlockingConnection(broker.params())
        except Exception:  # noqa: BLE001
            st.count("producer_connect_failed")
            sleep_unless(st.stop_producers, rng.uniform(0.1, 0.5))
            continue
        st.count("producer_connections")
        epoch = st.epoch
        lifetime = now() + rng.uniform(2, 20)
        drop = rng.random() < 0.3
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for q in QUEUES:
                ch.queue_declare(q, durable=True)
            while not st.stop_producers.is_set() and now() < lifetime:
                seq += 1
                q = rng.choice(QUEUES)
                mid = f"p{n}:{seq}"
                with st.lock:
                    st.attempted[mid] = q
                try:
                    ch.basic_publish("", q, f"{mid}|{q}".encode(), props, mandatory=True)
                except pex.UnroutableError:
                    st.unroutable.add(mid)
                    continue
                except pex.NackError:
                    st.nacked.add(mid)
                    continue
                st.confirmed.add(mid)
            if drop:
                drop_socket(conn)
            else:
                conn.close()
        except Exception as e:  # noqa: BLE001 - connection lost: that publish is unconfirmed
            st.count("producer_conn_errors")
            if st.up.is_set() and broker.alive() and st.epoch == epoch:
                st.error(f"producer:{type(e).__name__}")
                st.event("producer_error", error=repr(e)[:300])
            with contextlib.suppress(Exception):
                conn.close()
            sleep_unless(st.stop_producers, rng.uniform(0.05, 0.3))


# ----------------------------------------------------------------------------- consumer


def consumer(st: State, broker: Broker, n: int) -> None:
    rng = random.Random(st.seed * 1000 + 500 + n)
    conn_no = 0
    while not st.stop_all.is_set():
        if not st.up.wait(0.5):
            continue
        try:
            conn = pika.BlockingConnection(broker.params())
        except Exception:  # noqa: BLE001
            st.count("consumer_connect_failed")
            sleep_unless(st.stop_all, rng.uniform(0.1, 0.5))
            continue
        conn_no += 1
        key = f"c{n}.{conn_no}"
        st.count("consumer_connections")
        draining = st.draining.is_set()
        lifetime = now() + (1e9 if draining else rng.uniform(3, 25))
        mode = "close" if draining else rng.choice(["close", "close", "drop", "drop-unacked"])
        pending_ack: list[str] = []  # acks sent on this connection
        epoch = st.epoch
        unacked_left = 0

        def on_message(ch, method, _props, body, *, _key=key, mode=mode, lifetime=lifetime,
                       pending_ack=pending_ack) -> None:
            nonlocal unacked_left
            text = body.decode(errors="replace")
            mid, _, q = text.partition("|")
            with st.lock:
                st.deliveries[mid].append((st.t(), bool(method.redelivered), st.epoch, _key))
                st.last_delivery = now()
                if mid in st.ack_safe:
                    t_ack, e_ack = st.ack_safe[mid]
                    st.redelivered_after_safe_ack.append(
                        {"id": mid, "t_ack_safe": t_ack, "epoch_ack": e_ack, "t": st.t(),
                         "epoch": st.epoch, "redelivered": bool(method.redelivered),
                         "kill9_between": any(e_ack <= k < st.epoch for k in st.kill_epochs)})
                if q != method.routing_key or mid not in st.attempted or st.attempted[mid] != q:
                    st.bad_deliveries.append({"t": st.t(), "body": text[:200],
                                              "queue": method.routing_key,
                                              "published_to": st.attempted.get(mid)})
            if mode == "drop-unacked" and now() > lifetime - 1.0:
                unacked_left += 1  # leave it unacked: must come back after the drop
                return
            ch.basic_ack(method.delivery_tag)
            pending_ack.append(mid)

        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            for q in QUEUES:
                ch.queue_declare(q, durable=True)
                ch.basic_consume(q, on_message)
            while not st.stop_all.is_set() and now() < lifetime:
                if draining != st.draining.is_set():
                    break  # reconnect in drain mode (long-lived, clean close)
                conn.process_data_events(time_limit=0.2)
            if mode == "close":
                conn.close()  # close-ok: the broker processed every ack sent before it
                with st.lock:
                    st.acked.update(pending_ack)
                    for mid in pending_ack:
                        st.ack_safe.setdefault(mid, (st.t(), epoch))
            else:
                drop_socket(conn)
                st.acked.update(pending_ack)
                if unacked_left:
                    st.count("consumer_drops_with_unacked")
                    st.count("unacked_left_on_drop", unacked_left)
            if not st.draining.is_set() and rng.random() < 0.25:
                st.count("consumer_pauses")  # let a backlog build up for the next restart
                sleep_unless(st.stop_all, rng.uniform(2, 15))
        except Exception as e:  # noqa: BLE001
            st.acked.update(pending_ack)
            st.count("consumer_conn_errors")
            if st.up.is_set() and broker.alive() and st.epoch == epoch:
                st.error(f"consumer:{type(e).__name__}")
                st.event("consumer_error", error=repr(e)[:300])
            with contextlib.suppress(Exception):
                conn.close()
            sleep_unless(st.stop_all, rng.uniform(0.05, 0.3))


# ----------------------------------------------------------------------------- churn


def churn(st: State, broker: Broker) -> None:
    rng = random.Random(st.seed * 1000 + 999)
    k = 0
    conn = None
    conn_epoch = -1
    while not st.stop_producers.is_set():
        if not st.up.wait(0.5):
            continue
        epoch = st.epoch
        step = "connect"
        try:
            if conn is None or not conn.is_open or conn_epoch != epoch:
                if conn is not None:  # opened before a restart: gone
                    with contextlib.suppress(Exception):
                        conn.close()
                conn_epoch = epoch
                conn = pika.BlockingConnection(broker.params())
                ch = conn.channel()
                ch.confirm_delivery()
            k += 1
            name = f"soak.churn.{k}"
            durable = rng.random() < 0.5
            step = "declare"
            ch.queue_declare(name, durable=durable, arguments={"x-max-length": 1000})
            st.count("churn_created")
            bodies = [f"churn:{k}:{i}".encode() for i in range(rng.randint(1, 10))]
            step = "publish"
            for b in bodies:
                ch.basic_publish("", name, b, pika.BasicProperties(delivery_mode=2),
                                 mandatory=True)
            step = "get"
            got = []
            for _ in range(len(bodies) + 1):
                _m, _p, body = ch.basic_get(name, auto_ack=True)
                if body is None:
                    break
                got.append(body)
            if got != bodies:
                st.error("churn:get-mismatch")
                st.event("churn_mismatch", queue=name, published=len(bodies), got=len(got))
            step = "delete"
            ch.queue_delete(name)
            st.count("churn_deleted")
            if rng.random() < 0.2:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001
            if st.up.is_set() and st.epoch == epoch and broker.alive():
                st.error(f"churn:{step}:{type(e).__name__}")
                st.event("churn_error", step=step, error=repr(e)[:300])
            else:
                st.count("churn_interrupted_by_restart")
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = None
        sleep_unless(st.stop_producers, rng.uniform(0.05, 0.4))
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


# ----------------------------------------------------------------------------- chaos


def restart(st: State, broker: Broker, kind: str) -> None:
    st.up.clear()
    with st.lock:
        st.epoch += 1
        if kind == "kill9":
            st.kill_epochs.add(st.epoch - 1)
    if kind == "kill9":
        broker.kill()
        st.event("kill9")
        st.count("restarts_kill9")
    else:
        secs, rc = broker.stop()
        st.event("sigterm", seconds=round(secs, 3), rc=rc)
        st.count("restarts_graceful")
        if rc != 0:
            st.error(f"broker:graceful-exit-{rc}")
    time.sleep(0.3)
    secs = broker.start()
    with st.lock:
        st.epoch += 1
    st.event("started", seconds=round(secs, 3))
    st.up.set()


def chaos(st: State, broker: Broker, until: float) -> None:
    try:
        _chaos(st, broker, until)
    except Exception as e:  # noqa: BLE001
        st.chaos_failure = repr(e)
        st.event("chaos_failure", error=repr(e)[:300])


def _chaos(st: State, broker: Broker, until: float) -> None:
    rng = random.Random(st.seed * 1000 + 777)
    kind = rng.choice(["graceful", "kill9"])
    while True:
        wait = rng.uniform(20, 60)
        if now() + wait > until:
            return
        if sleep_unless(st.stop_producers, wait):
            return
        restart(st, broker, kind)
        kind = "kill9" if kind == "graceful" else "graceful"


# ----------------------------------------------------------------------------- drain


def queue_depths(broker: Broker) -> dict[str, int] | None:
    try:
        conn = pika.BlockingConnection(broker.params())
        try:
            ch = conn.channel()
            out = {q: ch.queue_declare(q, durable=True, passive=True).method.message_count
                   for q in QUEUES}
        finally:
            conn.close()
        return out
    except Exception:  # noqa: BLE001
        return None


def drain(st: State, broker: Broker, deadline: float, label: str) -> dict:
    """Wait until the queues are empty (ready and unacked) and deliveries stopped for 2 s."""
    t0 = now()
    while now() < deadline:
        try:
            qs = {q["name"]: q for q in broker.api("/api/queues")
                  if q.get("name") in QUEUES}
            total = sum(int(q.get("messages", 0)) for q in qs.values())
        except Exception:  # noqa: BLE001
            qs, total = {}, -1
        if total == 0 and now() - st.last_delivery > 2.0:
            depths = queue_depths(broker)
            if depths is not None and sum(depths.values()) == 0:
                st.event(f"drained_{label}", seconds=round(now() - t0, 2))
                return {"drained": True, "seconds": round(now() - t0, 2)}
        time.sleep(0.5)
    depths = queue_depths(broker)
    st.event(f"drain_timeout_{label}", depths=depths)
    return {"drained": False, "seconds": round(now() - t0, 2), "depths": depths}


# ----------------------------------------------------------------------------- main


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
          f"ports={broker.port}/{broker.mport} dir={tmp}", flush=True)
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

    # ------------------------------------------------------------------ verification
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
        "broker": {"package": broker_pkg, "commit": commit},
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
    if not args.keep and ok and not log_info["tracebacks"]:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
