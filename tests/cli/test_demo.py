"""``smartbroker demo compare``: runs both setups end to end and prints the comparison,
then reads the stream with a Kafka consumer at the offsets AMQP saw."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from typer.testing import CliRunner

from smartbroker.cli import app
from tests.conftest import EXTERNAL_URL, running_broker

pytestmark = pytest.mark.extension
ROWS = ("messages stored", "disk used", "broker memory growth", "publish throughput",
        "consume throughput", "late-joining service", "replay after", "poison message")


def run(*args: str) -> tuple[str, dict[str, Any]]:
    """(the printed output, the --json results) of one ``demo compare`` run."""
    result = CliRunner().invoke(app, ["demo", "compare", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, json.loads(result.output.strip().splitlines()[-1])


def test_compare_starts_its_own_brokers_and_prints_both_columns():
    out, res = run("--messages", "200")
    assert "classic queues + fanout" in out and "consumer groups" in out
    for label in ROWS:
        assert label in out
    classic, stream = res["classic"], res["stream"]
    assert classic["stored"].startswith("600 (a copy per queue)")
    assert stream["stored"].startswith("200 (one copy)")
    assert classic["late_join"].startswith("0 of 200")
    assert stream["late_join"].startswith("200 of 200")
    assert classic["replay"].startswith("impossible: 0 of 200 events left")
    assert "only the 1 in the DLQ" in classic["replay"]
    assert stream["replay"].startswith("200 events re-read")
    assert "dead-lettered" in classic["poison"] and "1 message in the DLQ" in classic["poison"]
    assert re.match(r"stays in the log at partition \d, offset \d+", stream["poison"])
    assert all(r["publish_rate"] > 0 and r["consume_rate"] > 0 for r in (classic, stream))
    assert "MiB" in classic["disk"] or "KiB" in classic["disk"]
    assert classic["kafka"].startswith("none: a classic queue is not a Kafka topic")
    assert stream["kafka"].startswith("200 of 200 records read over Kafka")
    where = re.search(r"partition (\d), offset (\d+)", stream["poison"])
    assert where is not None
    assert (f"the poison event is at partition {where[1]}, offset {where[2]} with key "
            f"order-25: the same partition, offset and key") in stream["kafka"]


def test_compare_against_a_given_broker():
    if EXTERNAL_URL:
        pytest.skip("needs a smartbroker subprocess of its own")
    with running_broker("smartbroker-demo-", kafka=True) as b:
        _out, res = run("--messages", "100", "--url", b.url, "--api", b.api,
                        "--kafka-bootstrap", b.kafka_bootstrap)
    assert res["stream"]["late_join"].startswith("100 of 100")
    assert res["classic"]["disk"] == "n/a (external broker)"
    assert "reset its offsets to earliest" in res["stream"]["replay"]
    assert res["stream"]["kafka"].startswith("100 of 100 records read over Kafka")


def test_a_kafka_listener_that_is_not_there_is_a_row_not_a_crash(own_broker):
    with socket.socket() as s:  # a port nobody listens on while the demo runs
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
        _out, res = run("--messages", "50", "--url", own_broker.url, "--api", own_broker.api,
                        "--kafka-bootstrap", closed)
    assert res["stream"]["kafka"].startswith("not shown: ")
    assert res["stream"]["late_join"].startswith("50 of 50")
