"""Memory alarm: publishers are blocked (connection.blocked, socket not read) above the
high watermark and unblocked below it, while other connections keep working."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pika
import pytest

from tests.conftest import BrokerProcess

pytestmark = pytest.mark.extension
MiB = 1 << 20


def _rss(proc: BrokerProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _until(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_memory_alarm_blocks_and_unblocks_publishers(tmp_path: Path) -> None:
    probe = BrokerProcess(data_dir=tmp_path / "probe").start()
    baseline = _rss(probe)
    probe.stop()
    broker = BrokerProcess(data_dir=tmp_path / "data", env={
        "SMARTBROKER_MEMORY_HIGH_WATERMARK": str(baseline + 120 * MiB),
        "MALLOC_MMAP_THRESHOLD_": "65536",  # big bodies go back to the OS when freed
    }).start()
    events: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        """Publishes until told to stop; pika blocks inside basic_publish while the broker
        does not read its socket, which is exactly the back-pressure under test."""
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        ch = conn.channel()
        ch.queue_declare("ballast")
        while not stop.is_set():
            ch.basic_publish("", "ballast", b"x" * MiB)
            conn.process_data_events(time_limit=0)
        conn.close()

    api = httpx.Client(base_url=f"http://127.0.0.1:{broker.management_port}",
                       auth=("guest", "guest"), timeout=5)
    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    def publisher_state() -> set[str]:
        return {c["state"] for c in api.get("/api/connections").json()}

    try:
        assert _until(lambda: api.get("/api/health/checks/alarms").status_code == 503), "no alarm"
        assert _until(lambda: "blocked" in publisher_state()), "publisher never blocked"
        admin = pika.BlockingConnection(pika.URLParameters(broker.url))  # never published
        admin.channel().queue_declare("other")  # other clients keep working meanwhile
        admin.channel().queue_purge("ballast")
        assert _until(lambda: api.get("/api/health/checks/alarms").status_code == 200)
        # pika runs the callback from process_data_events: keep the publisher looping
        assert _until(lambda: "unblocked" in events), "client never told it was unblocked"
        stop.set()
        publisher.join(15)
        assert not publisher.is_alive(), "publisher still stuck after the alarm cleared"
        assert events[:2] == ["blocked", "unblocked"]  # the client was told both ways
        admin.close()
    finally:
        stop.set()
        api.close()
        broker.stop()
