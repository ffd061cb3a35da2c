"""*_details.rate comes from timed samples (collect_statistics_interval), not from reads.

A private broker samples every 100 ms so the test sees several samples quickly; the
shared-broker test in test_api_queues.py checks the same against RabbitMQ's 5 s default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, assert_clean_log

pytestmark = pytest.mark.extension


@pytest.fixture
def fast_sampling(tmp_path: Path) -> Iterator[BrokerProcess]:
    if EXTERNAL_URL:
        pytest.skip("needs a smartbroker subprocess of its own")
    proc = BrokerProcess(data_dir=tmp_path / "data",
                         env={"SMARTBROKER_COLLECT_STATISTICS_INTERVAL": "100"}).start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """Read until ``done`` holds (each read is an HTTP round trip, no sleeping)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value


def test_rates_follow_traffic_and_fall_back_to_zero(fast_sampling: BrokerProcess) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(fast_sampling.url))
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    with httpx.Client(base_url=f"http://127.0.0.1:{fast_sampling.management_port}",
                      auth=("guest", "guest"), timeout=10) as api:
        def stats() -> tuple[dict[str, Any], dict[str, Any]]:
            queue = api.get(f"/api/queues/%2F/{q}").json()["message_stats"]
            return queue, api.get("/api/overview").json()["message_stats"]

        def publishing() -> tuple[dict[str, Any], dict[str, Any]]:
            for _ in range(20):
                ch.basic_publish("", q, b"x")  # confirmed: counted before the next read
            return stats()

        queue, overview = poll(publishing, lambda s: s[0]["publish_details"]["rate"] > 0
                               and s[1]["publish_details"]["rate"] > 0)
        assert queue["publish_details"]["rate"] > 0, queue
        assert overview["publish_details"]["rate"] > 0, overview
        assert set(queue) == {"publish", "publish_details", "deliver_get", "deliver_get_details",
                              "deliver", "deliver_details", "ack", "ack_details",
                              "redeliver", "redeliver_details"}
        assert queue["deliver_details"] == {"rate": 0.0}  # nothing consumed

        queue, _ = poll(stats, lambda s: s[0]["publish_details"]["rate"] == 0.0)
        assert queue["publish_details"] == {"rate": 0.0}  # a later sample saw no publishes
        assert queue["publish"] > 0
    conn.close()
