"""The soak's broker (a ``smartbroker.launcher.BrokerProcess`` run from ``--tree``), the
chaos loop that restarts it (SIGTERM and kill -9 in turn) and the final drain."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pika
from soak_state import QUEUES, State, now, sleep_unless

from smartbroker.launcher import BrokerProcess


class Broker:
    """Ready once the management API answers; restarts keep its ports and data dir."""

    def __init__(self, tree: Path, data_dir: Path, log_path: Path) -> None:
        self.proc = BrokerProcess(data_dir, log_path=log_path, tree=tree, new_session=True)

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def management_port(self) -> int:
        return self.proc.management_port

    def alive(self) -> bool:
        return self.proc.alive()

    def params(self, **kw) -> pika.ConnectionParameters:
        base = dict(host="127.0.0.1", port=self.port, connection_attempts=1, socket_timeout=3,
                    stack_timeout=5, blocked_connection_timeout=15, heartbeat=5)
        base.update(kw)
        return pika.ConnectionParameters(**base)

    def start(self, timeout: float = 90.0) -> float:
        """Seconds until AMQP and the management API answered."""
        return self.proc.start(timeout).startup_seconds

    def stop(self, timeout: float = 60.0) -> tuple[float, int | None]:
        """SIGTERM (kill -9 after ``timeout``): (seconds, exit code)."""
        rc = self.proc.stop(timeout)
        return self.proc.stop_seconds, rc

    def kill(self) -> None:
        self.proc.kill()

    def queues(self) -> list[dict]:
        return self.proc.get_json("/api/queues")


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
            qs = {q["name"]: q for q in broker.queues()
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
