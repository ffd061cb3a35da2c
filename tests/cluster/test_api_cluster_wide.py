"""The management API on any node answers for the whole cluster, as RabbitMQ's does
(issue 15): a definition declared on another node a moment ago is never a 404 (the API
catches up with etcd before one, management/caught_up.py). Two real nodes, one real etcd,
pika clients and HTTP over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.http_api import call, get
from tests.cluster.node_group import cluster_node, poll, start_all, stop_all

NAMES = ("w1", "w2")
ROUNDS = 30


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("api-cluster-wide")
    cluster = f"w-{free_port()}"
    procs = [cluster_node(tmp, n, etcd.endpoint, cluster,
                          env={"SMARTBROKER_COLLECT_STATISTICS_INTERVAL": "200"})
             for n in NAMES]
    try:
        start_all(procs)
        yield procs
    finally:
        stop_all(procs)


def channel(proc: BrokerProcess) -> Any:
    return pika.BlockingConnection(pika.URLParameters(proc.url)).channel()


def test_declared_on_one_node_is_no_404_on_the_others_api(nodes: list[BrokerProcess]) -> None:
    first, second = nodes
    ch = channel(first)
    try:
        for i in range(ROUNDS):
            q, x = f"api-q-{i}", f"api-x-{i}"
            ch.queue_declare(q, durable=True)
            ch.exchange_declare(x, "direct", durable=True)
            ch.queue_bind(q, x, routing_key="k")
            assert get(second, f"/api/bindings/%2F/e/{x}/q/{q}")[0]["routing_key"] == "k"
            ch.queue_declare(f"api-q2-{i}", durable=True)
            assert get(second, f"/api/queues/%2F/api-q2-{i}")["node"] == "w1"
            ch.exchange_declare(f"api-x2-{i}", "fanout", durable=True)
            assert get(second, f"/api/exchanges/%2F/api-x2-{i}")["type"] == "fanout"
        start = time.monotonic()
        status, body = call(second, "/api/queues/%2F/" + quote("no-such-queue", safe=""))
        assert status == 404 and body["error"] == "Object Not Found", (status, body)
        assert time.monotonic() - start < 1.0  # one etcd read more, not the 3 s bound
    finally:
        ch.connection.close()


def test_get_messages_through_a_node_that_does_not_lead_the_queue(
        nodes: list[BrokerProcess]) -> None:
    first, second = nodes
    ch = channel(first)
    try:
        ch.queue_declare("api-get", durable=True)
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", "api-get", f"m{i}".encode(),
                             pika.BasicProperties(headers={"i": i}))
        path = "/api/queues/%2F/api-get/get"
        status, got = call(second, path, {"count": 2, "ackmode": "ack_requeue_true",
                                          "encoding": "auto"}, "POST")
        assert status == 200, (status, got)
        assert [m["payload"] for m in got] == ["m0", "m1"]
        assert got[0]["properties"]["headers"] == {"i": 0} and got[0]["routing_key"] == "api-get"
        assert got[1]["message_count"] == 1  # as RabbitMQ: what is left after this one
        poll(lambda: get(first, "/api/queues/%2F/api-get")["messages_ready"] == 3,
             "the two requeued on the leader")
        status, got = call(second, path, {"count": 5, "ackmode": "ack_requeue_false",
                                          "encoding": "base64", "truncate": 1}, "POST")
        assert status == 200, (status, got)
        assert [m["payload"] for m in got] == ["bQ==", "bQ==", "bQ=="]  # "m", truncated
        assert [m["redelivered"] for m in got] == [True, True, False]
        poll(lambda: ch.queue_declare("api-get", passive=True).method.message_count == 0,
             "acked on the leader")
        status, got = call(second, path, {"count": 1, "ackmode": "ack_requeue_true",
                                          "encoding": "auto"}, "POST")
        assert (status, got) == (200, [])
    finally:
        ch.connection.close()


def test_connections_channels_consumers_of_every_node_and_closing_one_elsewhere(
        nodes: list[BrokerProcess]) -> None:
    first, second = nodes
    params = pika.URLParameters(first.url)
    params.client_properties = {"connection_name": "api-on-w1"}
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare("api-consumed", durable=True)
    tag = ch.basic_consume("api-consumed", lambda *a: None)
    try:
        mine = next(c for c in get(first, "/api/connections")
                    if c["client_properties"].get("connection_name") == "api-on-w1")
        name = mine["name"]
        for path in ("/api/connections", "/api/vhosts/%2F/connections"):
            found = [c for c in get(second, path) if c["name"] == name]
            assert [(c["node"], c["user"]) for c in found] == [("w1", "guest")], path
        assert get(second, "/api/connections/" + quote(name, safe=""))["node"] == "w1"
        chans = [c for c in get(second, "/api/channels")
                 if c["connection_details"]["name"] == name]
        assert [(c["node"], c["number"], c["consumer_count"]) for c in chans] == [("w1", 1, 1)]
        assert get(second, "/api/channels/" + quote(chans[0]["name"], safe=""))["node"] == "w1"
        assert len(get(second, f"/api/connections/{quote(name, safe='')}/channels")) == 1
        consumers = [c for c in get(second, "/api/consumers/%2F") if c["consumer_tag"] == tag]
        assert consumers and consumers[0]["queue"] == {"name": "api-consumed", "vhost": "/"}
        assert consumers[0]["channel_details"]["node"] == "w1"

        status, _ = call(second, "/api/connections/" + quote(name, safe=""), method="DELETE")
        assert status == 204
        deadline = time.monotonic() + 10
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert closed.value.reply_code == 320
        assert closed.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
        poll(lambda: all(c["name"] != name for c in get(second, "/api/connections")),
             "the closed connection gone from w2's list")
        status, _ = call(second, "/api/connections/no-such-connection", method="DELETE")
        assert status == 404
    finally:
        if conn.is_open:
            conn.close()
