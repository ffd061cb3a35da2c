"""The soak's shared bookkeeping: what every producer attempted and got confirmed, what
every consumer received and acked, and the events and errors of the run; one lock."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, defaultdict

import pika

QUEUES = ["soak.q0", "soak.q1", "soak.q2"]


def now() -> float:
    return time.monotonic()


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
