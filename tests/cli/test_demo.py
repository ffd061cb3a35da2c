"""``smartbroker demo compare``: runs both setups end to end and prints the comparison."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from smartbroker.cli import app

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


def test_compare_against_a_given_broker(own_broker):
    _out, res = run("--messages", "100", "--url", own_broker.url, "--api", own_broker.api)
    assert res["stream"]["late_join"].startswith("100 of 100")
    assert res["classic"]["disk"] == "n/a (external broker)"
    assert "reset its offsets to earliest" in res["stream"]["replay"]
