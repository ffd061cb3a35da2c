"""``smartbroker cluster forget NODE`` deletes the queues the node led, as RabbitMQ's
forget_cluster_node deletes the durable classic queues whose home node it was: on two
real nodes and a real etcd, the other node drops its proxies (the queue, a stream and
their bindings), keeps its own queues, answers a plain 404 for the gone queue (not
"home node ... is down") and may declare it anew, led by itself.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from typer.testing import CliRunner

from smartbroker.cli import app
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import cluster_node, poll
from tests.conftest import assert_clean_log

TIMEOUT = 15.0


@pytest.fixture
def pair(etcd: Any, tmp_path: Any) -> Iterator[tuple[dict[str, BrokerProcess], str]]:
    cluster = f"forget-{free_port()}"
    procs = {n: cluster_node(tmp_path, n, etcd.endpoint, cluster) for n in ("n1", "n2")}
    try:
        for proc in procs.values():
            proc.start()
        yield procs, cluster
    finally:
        for proc in procs.values():
            proc.stop()
        for proc in procs.values():
            assert_clean_log(proc)


def leader(proc: BrokerProcess, queue: str) -> str | None:
    try:
        return proc.get_json(f"/api/queues/%2F/{queue}").get("node")
    except urllib.error.HTTPError:
        return None


def bound_queues(proc: BrokerProcess) -> set[str]:
    return {b["destination"] for b in proc.get_json("/api/bindings/%2F")
            if b["source"] == "amq.direct"}


def test_forget_deletes_the_queues_the_node_led(
        etcd: Any, pair: tuple[dict[str, BrokerProcess], str]) -> None:
    nodes, cluster = pair
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n2"].url))
    ch = conn.channel()
    ch.queue_declare("orders", durable=True)  # client-local: led by n2
    ch.queue_bind("orders", "amq.direct", "k")
    ch.queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    ch.queue_bind("events", "amq.direct", "e")
    conn.close()
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    conn.channel().queue_declare("keep", durable=True)  # led by n1
    conn.channel().queue_bind("keep", "amq.direct", "keep")
    conn.close()
    for queue in ("orders", "events"):
        poll(lambda q=queue: leader(nodes["n1"], q) == "n2", f"n1 sees {queue} on n2")
    poll(lambda: bound_queues(nodes["n1"]) == {"orders", "events", "keep"}, "n1's bindings")

    nodes["n2"].stop()
    poll(lambda: not nodes["n1"].get_json("/api/nodes/n2")["running"], "n1 sees n2 down")
    result = CliRunner().invoke(app, ["cluster", "forget", "n2", "--etcd", etcd.endpoint,
                                      "--cluster-name", cluster])
    assert result.exit_code == 0, result.output
    assert "with the 2 queue(s) it led" in result.output

    poll(lambda: leader(nodes["n1"], "orders") is None and leader(nodes["n1"], "events") is None,
         "n1 dropped the forgotten node's queues")
    assert bound_queues(nodes["n1"]) == {"keep"}
    assert leader(nodes["n1"], "keep") == "n1"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            conn.channel().queue_declare("orders", passive=True)
        assert gone.value.reply_code == 404 and "home node" not in gone.value.reply_text
        ch = conn.channel()
        ch.queue_declare("orders", durable=True)  # a new queue, led by the node declaring it
        ch.basic_publish("", "orders", b"again")
        assert ch.queue_declare("orders", passive=True).method.message_count == 1
    finally:
        conn.close()
    assert leader(nodes["n1"], "orders") == "n1"
    nodes["n2"].start()  # forgotten, it may join again: what it led is not back
    poll(lambda: leader(nodes["n2"], "orders") == "n1", "n2 sees the new orders on n1")
    assert leader(nodes["n2"], "events") is None
