"""Admin commands through typer's CliRunner against the test broker."""

from __future__ import annotations

import json
import time

import pytest


def test_status_table_and_json(cli) -> None:
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "connections" in result.stdout and "queues" in result.stdout
    doc = json.loads(cli("status", "--json").stdout)
    assert "object_totals" in doc


def test_queue_declare_list_purge_delete(cli, qname: str) -> None:
    assert cli("queues", "declare", qname, "--transient", "--arg", "x-max-length=10").exit_code == 0
    cli("publish", "", qname, "hello", "--count", "3")

    def row() -> dict:  # RabbitMQ's API reports message stats a few seconds late
        rows = json.loads(cli("queues", "list", "--vhost", "/", "--json").stdout)
        return next(r for r in rows if r["name"] == qname)

    deadline = time.monotonic() + 15
    while row().get("messages") != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert row()["messages"] == 3 and row()["arguments"] == {"x-max-length": 10}
    table = cli("queues", "list").stdout
    line = next(ln for ln in table.splitlines() if qname in ln)
    assert line.split()[-5:] == ["3", "3", "0", "0", "no"]
    assert cli("queues", "purge", qname).exit_code == 0
    assert json.loads(cli("queues", "list", "--json").stdout)
    assert cli("queues", "delete", qname).exit_code == 0
    result = cli("queues", "delete", qname)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: queue '{qname}' not found in vhost '/'"


def test_exchange_bind_publish_get_unbind(cli, qname: str, uid: str) -> None:
    ex = f"test.cli.x.{uid}"
    assert cli("exchanges", "declare", ex, "--type", "topic", "--transient").exit_code == 0
    cli("queues", "declare", qname, "--transient")
    try:
        assert cli("bind", ex, qname, "--routing-key", "a.*").exit_code == 0
        listed = json.loads(cli("bindings", "list", "--vhost", "/", "--json").stdout)
        assert any(b["source"] == ex and b["routing_key"] == "a.*" for b in listed)
        assert ex in cli("exchanges", "list").stdout
        assert cli("publish", ex, "a.b", "payload-1", "--header", "k=v").exit_code == 0
        result = cli("get", qname, "--requeue", "--json")
        assert result.exit_code == 0, result.output
        msg = json.loads(result.stdout)
        assert msg["payload"] == "payload-1" and msg["properties"]["headers"] == {"k": "v"}
        result = cli("get", qname)
        assert result.stdout == "payload-1\n"
        assert "is empty" in cli("get", qname).stderr
        assert cli("unbind", ex, qname, "--routing-key", "a.*").exit_code == 0
        result = cli("unbind", ex, qname, "--routing-key", "a.*")
        assert result.exit_code == 1 and result.stderr.startswith("error: no binding")
    finally:
        cli("queues", "delete", qname)
        cli("exchanges", "delete", ex)


def test_consume_count(cli, qname: str) -> None:
    cli("queues", "declare", qname, "--transient")
    try:
        cli("publish", "", qname, "m", "--count", "5", "--persistent")
        result = cli("consume", qname, "--count", "5")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == ["m"] * 5
    finally:
        cli("queues", "delete", qname)


def test_users_add_password_delete(cli, uid: str) -> None:
    name = f"cli-user-{uid}"
    assert cli("users", "add", name, "pw", "--tags", "management").exit_code == 0
    users = json.loads(cli("users", "list", "--json").stdout)
    assert any(u["name"] == name and u["tags"] == ["management"] for u in users)
    assert cli("users", "set-password", name, "pw2").exit_code == 0
    assert cli("users", "delete", name).exit_code == 0
    result = cli("users", "delete", name)
    assert result.exit_code == 1 and result.stderr.strip() == f"error: user '{name}' not found"


def test_definitions_export_import(cli, tmp_path, qname: str) -> None:
    cli("queues", "declare", qname, "--durable")
    path = tmp_path / "defs.json"
    try:
        assert cli("definitions", "export", str(path)).exit_code == 0
        doc = json.loads(path.read_text())
        assert any(q["name"] == qname for q in doc["queues"])
        cli("queues", "delete", qname)
        result = cli("definitions", "import", str(path))
        assert result.exit_code == 0, result.output
        names = [q["name"] for q in json.loads(cli("queues", "list", "--json").stdout)]
        assert qname in names
    finally:
        cli("queues", "delete", qname)


def test_list_commands_render(cli) -> None:
    for group in ("connections", "channels", "consumers", "vhosts", "users", "exchanges",
                  "bindings", "queues"):
        result = cli(group, "list")
        assert result.exit_code == 0, (group, result.output)
        assert isinstance(json.loads(cli(group, "list", "--json").stdout), list)


def test_unknown_vhost_is_one_line(cli) -> None:
    result = cli("queues", "list", "--vhost", "no-such-vhost")
    assert result.exit_code == 1
    assert result.stderr == "error: vhost 'no-such-vhost' not found\n"


def test_unreachable_api_is_one_line(cli) -> None:
    result = cli("queues", "list", "--api", "http://guest:guest@127.0.0.1:1")
    assert result.exit_code == 1
    assert result.stderr == "error: cannot reach broker at http://127.0.0.1:1\n"


def test_unreachable_amqp_is_one_line(cli) -> None:
    result = cli("get", "q", "--url", "amqp://guest:guest@127.0.0.1:1/")
    assert result.exit_code == 1
    assert result.stderr == "error: cannot reach broker at amqp://127.0.0.1:1/\n"


def test_missing_queue_over_amqp_is_one_line(cli, uid: str) -> None:
    result = cli("get", f"nope.{uid}")
    assert result.exit_code == 1
    assert result.stderr == f"error: 404 NOT_FOUND - no queue 'nope.{uid}' in vhost '/'\n"
    result = cli("publish", f"nope.{uid}", "k", "body")
    assert result.exit_code == 1
    assert result.stderr == f"error: 404 NOT_FOUND - no exchange 'nope.{uid}' in vhost '/'\n"


def test_publish_needs_a_body(cli) -> None:
    result = cli("publish", "", "k")
    assert result.exit_code == 1 and result.stderr.startswith("error: give a BODY or --file")


@pytest.mark.extension
def test_close_connection_by_name(cli, broker_url: str) -> None:
    import time

    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        rows = json.loads(cli("connections", "list", "--json").stdout)
        local = "{}:{}".format(*conn._impl._transport._sock.getsockname())
        [name] = [r["name"] for r in rows if r["name"].startswith(local)]
        assert cli("connections", "close", name, "--reason", "bye").exit_code == 0
        deadline = time.monotonic() + 10
        with pytest.raises(pika.exceptions.ConnectionClosed):
            while time.monotonic() < deadline:
                conn.process_data_events(0.05)
    finally:
        if conn.is_open:
            conn.close()
