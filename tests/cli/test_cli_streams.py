"""`smartbroker streams` and `smartbroker groups` against a real stream and consumer group."""

from __future__ import annotations

import json

import pytest

from tests.management.scenarios import poll, stream_with_group

pytestmark = pytest.mark.extension


def _group(cli, stream: str) -> dict:
    return json.loads(cli("groups", "describe", "g", "--queue", stream, "--json").stdout)


def test_streams_info(cli, broker_url: str, qname: str) -> None:
    with stream_with_group(broker_url, qname, n=10):
        result = cli("streams", "info", qname)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "partitions" in out and "retention max-age" in out
        info = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.strip()}
        assert info["messages"] == ["10"] and info["groups"] == ["g"]
        rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] in (["0"], ["1"])]
        assert [r[0] for r in rows] == ["0", "1"]
        assert sum(int(r[4]) for r in rows) == 10  # messages column
        doc = json.loads(cli("streams", "info", qname, "--json").stdout)
        assert doc["partition_count"] == 2 and doc["messages"] == 10
        assert qname in cli("streams", "list").stdout


def test_groups_list_describe(cli, broker_url: str, qname: str) -> None:
    with stream_with_group(broker_url, qname, n=6):
        doc = poll(lambda: (lambda d: d if d["lag"] == 0 else None)(_group(cli, qname)),
                   what="lag 0")
        tag = doc["members"][0]["consumer_tag"]
        result = cli("groups", "describe", "g", "--queue", qname)
        assert result.exit_code == 0, result.output
        assert f"group 'g' on stream '{qname}': active, 1 member(s)" in result.stdout
        parts = [ln.split() for ln in result.stdout.splitlines() if ln.split()[:1] in (["0"], ["1"])]
        assert [(p[1], p[-1]) for p in parts] == [(tag, "0"), (tag, "0")]
        listed = [ln.split() for ln in cli("groups", "list", "--vhost", "/").stdout.splitlines()
                  if qname in ln]
        assert listed == [["/", qname, "g", "active", "1", "0"]]


def test_reset_offsets_replay(cli, broker_url: str, qname: str) -> None:
    with stream_with_group(broker_url, qname, n=8) as s:
        poll(lambda: _group(cli, qname)["lag"] == 0, what="lag 0")
        refused = cli("groups", "reset-offsets", "g", "--queue", qname, "--to-earliest")
        assert refused.exit_code == 1
        assert refused.stderr == (f"error: consumer group 'g' on stream '{qname}' has 1 active "
                                  f"member(s): stop its consumers before resetting offsets\n")
        s.stop_group()
        poll(lambda: not _group(cli, qname)["active"], what="group inactive")

        dry = cli("groups", "reset-offsets", "g", "--queue", qname, "--to-earliest", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert dry.stdout.rstrip().endswith("dry run: nothing changed")
        assert _group(cli, qname)["lag"] == 0

        done = cli("groups", "reset-offsets", "g", "--queue", qname, "--shift-by", "-1")
        assert done.exit_code == 0, done.output
        assert "offsets of group 'g' reset (shift -1)" in done.stdout
        assert _group(cli, qname)["lag"] == 2  # one per partition
        assert cli("groups", "reset-offsets", "g", "-q", qname, "--to-datetime",
                   "2000-01-01T00:00:00Z").exit_code == 0
        assert _group(cli, qname)["lag"] == 8
        assert cli("groups", "reset-offsets", "g", "-q", qname, "--to-offset", "1").exit_code == 0
        assert [p["committed_offset"] for p in _group(cli, qname)["partitions"]] == [1, 1]


def test_group_errors(cli, qname: str) -> None:
    result = cli("groups", "reset-offsets", "g", "--queue", qname, "--to-earliest", "--to-latest")
    assert result.exit_code == 1
    assert result.stderr == ("error: give exactly one of --to-earliest, --to-latest, --to-offset, "
                             "--to-datetime, --shift-by\n")
    result = cli("groups", "describe", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: consumer group 'nope' not found in vhost '/'\n"
    result = cli("streams", "info", qname)
    assert result.exit_code == 1
    assert result.stderr == f"error: queue '{qname}' not found in vhost '/'\n"


def test_consume_a_stream_from_an_offset(cli, qname: str, broker_url: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.queue_declare(qname, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", qname, f"event-{i}".encode())
    result = cli("consume", qname, "--offset", "3", "--count", "2", "--json")
    assert result.exit_code == 0, result.output
    bodies = [line for line in result.output.splitlines() if "event-" in line]
    assert len(bodies) == 2 and "event-3" in bodies[0] and "event-4" in bodies[1]
    ch.queue_delete(qname)
    conn.close()
