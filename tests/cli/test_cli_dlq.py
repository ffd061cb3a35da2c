"""`smartbroker dlq`: inspect, redrive (batched, dry run), purge, against real dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.management.scenarios import dead_letters

pytestmark = pytest.mark.extension


def test_inspect_table_and_json(cli, broker_url: str, uid: str) -> None:
    with dead_letters(broker_url, uid, n=3) as d:
        result = cli("dlq", "inspect", d.dlq, "--limit", "2")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert f"{d.dlq}: 2 of 3 message(s)" in lines[0]
        rows = [ln.split() for ln in lines if ln.strip().startswith(("0 ", "1 "))]
        assert len(rows) == 2
        assert rows[0][:5] == ["0", "rejected", d.work, "1", "1"]
        assert rows[0][-4:] == [d.exchange, d.routing_key, "7", "order-0"]
        doc = json.loads(cli("dlq", "inspect", d.dlq, "--json").stdout)
        assert doc["messages"] == 3 and [m["body_preview"] for m in doc["items"]] == [
            "order-0", "order-1", "order-2"]
        assert d.ready(d.dlq) == 3
        listed = cli("dlq", "list", "--vhost", "/").stdout
        assert any(d.dlq in ln and d.work in ln for ln in listed.splitlines())


def test_redrive_after_a_fix_in_batches(cli, broker_url: str, uid: str) -> None:
    with dead_letters(broker_url, uid, n=5) as d:
        dry = cli("dlq", "redrive", d.dlq, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "dry run: 5 message(s)" in dry.stdout
        assert any(d.exchange in ln and ln.split()[-1] == "5" for ln in dry.stdout.splitlines())
        assert d.ready(d.dlq) == 5

        part = cli("dlq", "redrive", d.dlq, "--limit", "2", "--batch-size", "1")
        assert part.exit_code == 0, part.output
        assert part.stdout == (f"moved 2 message(s) from '{d.dlq}' back to where they died; "
                               f"3 left in the queue\n")
        rest = json.loads(cli("dlq", "redrive", d.dlq, "--batch-size", "2", "--json").stdout)
        assert rest == {"moved": 3, "left_in_dlq": 0, "unroutable": 0, "skipped_no_death": 0,
                        "remaining": 0}
        assert sorted(body for body, _ in d.drain(d.work, 5)) == [f"order-{i}" for i in range(5)]


def test_redrive_leaves_unroutable_and_keeps_going(cli, api_url: str, broker_url: str,
                                                   uid: str) -> None:
    with dead_letters(broker_url, uid, n=3) as d:
        d.ch.queue_unbind(d.work, d.exchange, d.routing_key)  # nowhere to go back to
        result = cli("dlq", "redrive", d.dlq, "--batch-size", "1")
        assert result.exit_code == 0
        assert "moved 0 message(s)" in result.stdout and "3 left in the queue" in result.stdout
        assert result.stderr.startswith("warning: 1 unroutable")
        assert d.ready(d.dlq) == 3
        d.ch.queue_bind(d.work, d.exchange, d.routing_key)  # the fix
        assert "moved 3 message(s)" in cli("dlq", "redrive", d.dlq).stdout


def test_purge_and_errors(cli, broker_url: str, uid: str) -> None:
    with dead_letters(broker_url, uid, n=2) as d:
        result = cli("dlq", "purge", d.dlq)
        assert result.exit_code == 0 and result.stdout == f"purged 2 message(s) from '{d.dlq}'\n"
        assert d.ready(d.dlq) == 0
        result = cli("dlq", "redrive", d.dlq, "--to-exchange", f"no.such.{uid}")
        assert result.exit_code == 1
        assert result.stderr == f"error: exchange 'no.such.{uid}' not found in vhost '/'\n"
    result = cli("dlq", "inspect", f"test.gone.{uid}")
    assert result.exit_code == 1
    assert result.stderr == f"error: queue 'test.gone.{uid}' not found in vhost '/'\n"


def test_redrive_as_a_subprocess(api_url: str, broker_url: str, uid: str) -> None:
    env = {**os.environ, "SMARTBROKER_API": api_url}
    with dead_letters(broker_url, uid, n=3) as d:
        proc = subprocess.run([sys.executable, "-m", "smartbroker", "dlq", "redrive", d.dlq],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == (f"moved 3 message(s) from '{d.dlq}' back to where they died; "
                               f"0 left in the queue\n")
        assert d.ready(d.dlq) == 0 and d.ready(d.work) == 3
