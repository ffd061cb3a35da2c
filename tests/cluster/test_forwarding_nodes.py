"""Three real nodes on a real etcd: a queue declared on node 2 is published to on node 1
and consumed on node 3 (pika clients, real sockets): confirms, prefetch, requeue with
redelivered, acks; basic.get and purge on node 1; /api/queues names the leader; when
node 2 is killed (-9) its queue answers RabbitMQ's 404 on the others, whose own queues
keep working.

Every node declares the queue, as applications do: the first declare places it (client-
local: on node 2), the others find the placement in etcd and build a proxy.
"""

from __future__ import annotations

import base64
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import cluster_node, poll, start_all, stop_all

NAMES = ("n1", "n2", "n3")
TIMEOUT = 15.0
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("forwarding")
    cluster = f"f-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, cluster,  # queue counts every 0.2 s
                             env={"SMARTBROKER_COLLECT_STATISTICS_INTERVAL": "200"})
             for n in NAMES}
    try:
        start_all(procs.values())
        yield procs
    finally:
        stop_all(procs.values())


def leader_seen(proc: BrokerProcess, queue: str) -> str | None:
    try:
        return proc.get_json(f"/api/queues/%2F/{quote(queue, safe='')}").get("node")
    except Exception:
        return None


def declare_everywhere(nodes: dict[str, BrokerProcess], queue: str, first: str) -> None:
    """Declared on ``first`` (its leader), then on the others, until each names it."""
    for name in (first, *(n for n in NAMES if n != first)):
        conn = pika.BlockingConnection(pika.URLParameters(nodes[name].url))
        try:  # a redeclare asks the leader: retried while the links come up (404)
            poll(lambda c=conn: _declared(c, queue), f"{queue} declared on {name}")
        finally:
            conn.close()
    for name in NAMES:
        poll(lambda n=name: leader_seen(nodes[n], queue) == first, f"{name} sees {queue} on {first}")


def consume_when_linked(ch: Any, queue: str, callback: Callable[..., None]) -> Any:
    """basic.consume, retried while the links come up (404 'home node ... is down')."""
    deadline = time.monotonic() + TIMEOUT
    conn = ch.connection
    while True:
        try:
            return ch, ch.basic_consume(queue, callback)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404 or time.monotonic() > deadline:
                raise
            ch = conn.channel()
            ch.basic_qos(prefetch_count=3)
            time.sleep(0.05)


def test_publish_on_1_to_a_queue_of_2_consumed_on_3(nodes: dict[str, BrokerProcess]) -> None:
    declare_everywhere(nodes, "work", "n2")
    pub = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    cons = pika.BlockingConnection(pika.URLParameters(nodes["n3"].url))
    try:
        pch = pub.channel()
        pch.confirm_delivery()
        poll(lambda: _published(pch, b"probe"), "a confirmed publish through node 1")
        for i in range(10):  # each confirmed (pika raises on a nack): the leader confirmed
            pch.basic_publish("", "work", f"m{i}".encode(),
                              pika.BasicProperties(delivery_mode=2), mandatory=True)
        cch = cons.channel()
        cch.basic_qos(prefetch_count=3)
        got: list[tuple[int, bytes, bool]] = []
        cch, _tag = consume_when_linked(cch, "work", lambda ch, m, p, body: got.append(
            (m.delivery_tag, body, m.redelivered)))
        poll(lambda: (cons.process_data_events(0.05), len(got) >= 3)[1], "three deliveries")
        cons.process_data_events(0.3)
        assert [b for _, b, _ in got] == [b"probe", b"m0", b"m1"]  # prefetch 3: no more
        cch.basic_nack(got[0][0], requeue=True)
        poll(lambda: (cons.process_data_events(0.05), len(got) >= 4)[1], "the redelivery")
        assert got[3][1:] == (b"probe", True)
        cch.basic_ack(got[3][0])
        cch.basic_ack(got[1][0])
        cch.basic_ack(got[2][0])
        while len(got) < 12:  # 3, the redelivery, then m2..m9: one more per ack
            before = len(got)
            poll(lambda b=before: (cons.process_data_events(0.05), len(got) > b)[1], "more")
            for tag, _b, _r in got[before:]:
                cch.basic_ack(tag)
        assert [b for _, b, _ in got[4:]] == [f"m{i}".encode() for i in range(2, 10)]
        assert not any(r for _, _, r in got[4:])
        cons.process_data_events(0.1)
        poll(lambda: nodes["n2"].get_json("/api/queues/%2F/work")["messages"] == 0,
             "the leader's queue empty")
    finally:
        pub.close()
        cons.close()


def _published(ch: Any, body: bytes) -> bool:
    try:
        ch.basic_publish("", "work", body, mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False


def test_get_and_purge_on_a_node_that_does_not_lead(nodes: dict[str, BrokerProcess]) -> None:
    declare_everywhere(nodes, "jobs", "n2")
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(4):
            ch.basic_publish("", "jobs", f"j{i}".encode())
        deadline = time.monotonic() + TIMEOUT
        while True:  # until the link to node 2 is up
            try:
                method, _props, body = ch.basic_get("jobs")
                break
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404 and time.monotonic() < deadline
                ch = conn.channel()
        assert (body, method.redelivered) == (b"j0", False)
        declared = ch.queue_declare("jobs", passive=True).method  # the leader's counts
        assert (declared.message_count, declared.consumer_count) == (3, 0)
        ch.basic_reject(method.delivery_tag, requeue=True)
        method, _props, body = ch.basic_get("jobs")
        assert (body, method.redelivered) == (b"j0", True)
        ch.basic_ack(method.delivery_tag)
        assert ch.queue_purge("jobs").method.message_count == 3
        assert ch.basic_get("jobs") == (None, None, None)
        ch.basic_publish("", "jobs", b"j4")
        poll(lambda: {q["name"]: q["messages"] for q in nodes["n1"].get_json("/api/queues")}
             .get("jobs") == 1, "node 1's queue list shows the leader's count")
        api = nodes["n1"].get_json("/api/queues/%2F/jobs")  # the leader's counts
        assert (api["node"], api["messages"], api["state"]) == ("n2", 1, "running")
        http_delete(nodes["n1"], "/api/queues/%2F/jobs/contents")
        assert nodes["n2"].get_json("/api/queues/%2F/jobs")["messages"] == 0
        http_delete(nodes["n3"], "/api/queues/%2F/jobs")  # deleted on its leader
        assert "jobs" not in {q["name"] for q in nodes["n2"].get_json("/api/queues")}
    finally:
        conn.close()


def test_home_node_killed(nodes: dict[str, BrokerProcess]) -> None:
    declare_everywhere(nodes, "orders", "n2")
    declare_everywhere(nodes, "local", "n1")
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    poll(lambda: _linked(conn, "orders"), "node 1 linked to node 2")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "orders", b"kept", pika.BasicProperties(delivery_mode=2))
    conn.close()
    nodes["n2"].kill()
    try:
        def refused() -> bool:
            conn = pika.BlockingConnection(pika.URLParameters(nodes["n3"].url))
            try:
                conn.channel().basic_consume("orders", lambda *a: None)
                return False
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404
                assert exc.reply_text == ("NOT_FOUND - home node 'n2' of durable queue 'orders' "
                                          "in vhost '/' is down or inaccessible")
                return True
            finally:
                if conn.is_open:
                    conn.close()

        poll(refused, "node 3 refuses to consume from node 2's queue")
        assert nodes["n3"].get_json("/api/queues/%2F/orders")["state"] == "down"
        conn = pika.BlockingConnection(pika.URLParameters(nodes["n3"].url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", "local", b"still")
            poll(lambda: ch.basic_get("local", auto_ack=True)[2] == b"still", "node 1's queue")
        finally:
            conn.close()
        conn = pika.BlockingConnection(pika.URLParameters(nodes["n3"].url))
        try:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="home node 'n2'"):
                conn.channel().queue_declare("orders", passive=True)
        finally:
            conn.close()
    finally:
        nodes["n2"].restart()
    # back: its durable message is served again, from another node
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    try:
        got: list[bytes | None] = []

        def fetched() -> bool:
            ch = conn.channel()
            try:
                got.append(ch.basic_get("orders", auto_ack=True)[2])
                return got[-1] is not None
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404
                return False

        poll(fetched, "node 2's durable message after its restart")
        assert got[-1] == b"kept"
    finally:
        conn.close()


def http_delete(proc: BrokerProcess, path: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{proc.management_port}{path}",
                                     method="DELETE", headers={"Authorization": AUTH})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204


def _declared(conn: Any, queue: str) -> bool:
    try:
        conn.channel().queue_declare(queue, durable=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404, exc
        return False


def _linked(conn: Any, queue: str) -> bool:
    """A passive declare answers from the leader once the link to it is up."""
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False


def test_a_binding_made_on_one_node_routes_on_the_others(
        nodes: dict[str, BrokerProcess]) -> None:
    """Queue declared on node 2, exchange and binding made on node 1: a publish on node 3
    through that exchange reaches node 2's queue as soon as the definitions arrive (the
    etcd watch), without any client declaring anything on node 3."""
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n2"].url))
    conn.channel().queue_declare("bound", durable=True)
    conn.close()
    poll(lambda: leader_seen(nodes["n1"], "bound") == "n2", "node 1 knows the queue")
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    ch = conn.channel()
    ch.exchange_declare("routes", "direct", durable=True)
    ch.queue_bind("bound", "routes", "k")
    conn.close()
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n3"].url))
    try:
        channel = [conn.channel()]
        channel[0].confirm_delivery()

        def attempt() -> bool:
            if channel[0].is_closed:
                channel[0] = conn.channel()
                channel[0].confirm_delivery()
            try:
                channel[0].basic_publish("routes", "k", b"via-n3", mandatory=True)
                return True
            except pika.exceptions.UnroutableError:
                return False
            except pika.exceptions.ChannelClosedByBroker as exc:  # exchange not there yet
                assert exc.reply_code == 404
                return False

        poll(attempt, "the binding routes on node 3", timeout=5.0)
    finally:
        conn.close()
    poll(lambda: nodes["n2"].get_json("/api/queues/%2F/bound")["messages"] >= 1,
         "the message on node 2")


def test_balanced_places_on_the_node_leading_fewest(nodes: dict[str, BrokerProcess]) -> None:
    """Declared on node 1 with the balanced locator: led by node 3 (which leads nothing);
    a publish and a basic.get on node 1 right after declare-ok work (node 3 may apply the
    definition after node 1 forwarded to it: the leader waits for it)."""
    declare_everywhere(nodes, "anchor-1", "n1")
    declare_everywhere(nodes, "anchor-2", "n2")
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    try:
        ch = conn.channel()
        ch.queue_declare("spread", durable=True,
                         arguments={"x-queue-leader-locator": "balanced"})
        ch.confirm_delivery()
        ch.basic_publish("", "spread", b"placed", mandatory=True)
        assert ch.basic_get("spread", auto_ack=True)[2] == b"placed"
    finally:
        conn.close()
    assert leader_seen(nodes["n1"], "spread") == "n3"
    poll(lambda: leader_seen(nodes["n3"], "spread") == "n3", "node 3 leads it")
