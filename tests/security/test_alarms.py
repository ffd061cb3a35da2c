"""Memory alarm: publishers are blocked (connection.blocked, socket not read) above the
high watermark and unblocked below it, while other connections keep working."""

from __future__ import annotations

import time
from pathlib import Path

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


def _pump_until(conn: pika.BlockingConnection, cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    return cond()


def test_memory_alarm_blocks_and_unblocks_publishers(tmp_path: Path) -> None:
    probe = BrokerProcess(data_dir=tmp_path / "probe").start()
    baseline = _rss(probe)
    probe.stop()
    watermark = baseline + 120 * MiB
    broker = BrokerProcess(data_dir=tmp_path / "data", env={
        "SMARTBROKER_MEMORY_HIGH_WATERMARK": str(watermark),
        "MALLOC_MMAP_THRESHOLD_": "65536",  # big bodies go back to the OS when freed
    }).start()
    try:
        events: list[str] = []
        publisher = pika.BlockingConnection(pika.URLParameters(broker.url))
        publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        ch = publisher.channel()
        ch.queue_declare("ballast")
        body = b"x" * MiB
        for _ in range(400):
            ch.basic_publish("", "ballast", body)
            publisher.process_data_events(time_limit=0)
            if "blocked" in events:
                break
        assert _pump_until(publisher, lambda: "blocked" in events), "never blocked"
        admin = pika.BlockingConnection(pika.URLParameters(broker.url))  # never published
        admin.channel().queue_declare("other")  # other clients keep working
        admin.channel().queue_purge("ballast")
        assert _pump_until(publisher, lambda: "unblocked" in events), "never unblocked"
        ch.basic_publish("", "other", b"after the alarm")
        publisher.process_data_events(time_limit=0.1)
        assert admin.channel().basic_get("other", auto_ack=True)[2] == b"after the alarm"
        admin.close()
        publisher.close()
    finally:
        broker.stop()
