"""*_details.rate comes from timed samples (collect_statistics_interval), not from reads.

A private broker samples every 100 ms so the test sees several samples quickly; the
shared-broker test in test_api_queues.py checks the same against RabbitMQ's 5 s default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, assert_clean_log
from tests.management.scenarios import poll

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

        def publishing_seen() -> tuple[dict[str, Any], dict[str, Any]] | None:
            for _ in range(20):
                ch.basic_publish("", q, b"x")  # confirmed: counted before the next read
            queue, overview = stats()
            rated = min(queue["publish_details"]["rate"], overview["publish_details"]["rate"]) > 0
            return (queue, overview) if rated else None

        queue, overview = poll(publishing_seen, what="a publish rate above 0")
        assert set(queue) == {"publish", "publish_details", "deliver_get", "deliver_get_details",
                              "deliver", "deliver_details", "ack", "ack_details",
                              "redeliver", "redeliver_details"}
        assert queue["deliver_details"] == {"rate": 0.0}  # nothing consumed

        def idle_seen() -> dict[str, Any] | None:
            queue = stats()[0]
            return queue if queue["publish_details"]["rate"] == 0.0 else None

        queue = poll(idle_seen, what="the rate back at 0 once publishing stopped")
        assert queue["publish"] > 0  # the counter stays; a later sample saw no publishes
    conn.close()
