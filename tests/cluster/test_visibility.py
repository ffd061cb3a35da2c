"""A queue or exchange declared on one node is never 404 on another right after declare-ok
(issue 15; RabbitMQ makes it visible cluster-wide before -ok): before a 404 a node
catches up with etcd (cluster/visibility.py, server/not_found.py). Three real nodes, one
real etcd, pika clients over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import cluster_node, start_all, stop_all
from tests.conftest import assert_clean_log

NAMES = ("v1", "v2", "v3")
ROUNDS = 50


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("visibility")
    cluster = f"v-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, cluster) for n in NAMES}
    try:
        start_all(procs.values())
        linked(procs)  # every test starts from a cluster whose links are up
        yield procs
    finally:
        stop_all(procs.values())


def channel(proc: BrokerProcess) -> Any:
    return pika.BlockingConnection(pika.URLParameters(proc.url)).channel()


def linked(nodes: dict[str, BrokerProcess]) -> None:
    """Every node reaches every other over the cluster link: until then a consume of a
    queue led elsewhere is refused as its leader being down (a different 404)."""
    deadline = time.monotonic() + 15
    for leader in NAMES:
        decl = channel(nodes[leader])
        decl.queue_declare(f"links-{leader}", durable=True)
        for other in NAMES:
            ch = channel(nodes[other])
            while True:
                try:
                    ch.basic_consume(f"links-{leader}", lambda *a: None)
                    break
                except pika.exceptions.ChannelClosedByBroker as exc:
                    assert exc.reply_code == 404 and time.monotonic() < deadline, exc
                    ch = ch.connection.channel()
            ch.connection.close()
        decl.queue_delete(f"links-{leader}")
        decl.connection.close()


def test_declared_on_one_node_is_found_at_once_on_another(nodes: dict[str, BrokerProcess]) -> None:
    first, second, third = (channel(nodes[n]) for n in NAMES)
    try:
        for i in range(ROUNDS):
            queue, exchange = f"vis-q-{i}", f"vis-x-{i}"
            first.queue_declare(queue, durable=True)
            second.queue_declare(queue, passive=True)  # passive: 404 if unknown
            tag = second.basic_consume(queue, lambda *a: None)
            second.basic_cancel(tag)
            first.exchange_declare(exchange, "direct", durable=True)
            third.exchange_declare(exchange, passive=True)
            third.queue_bind(queue, exchange, routing_key="k")  # both must be known
            third.basic_publish(exchange, "k", b"m")  # a publish to it: no 404 either
        # the publishes of the last round went to the queue through its leader
        deadline = time.monotonic() + 10
        while first.queue_declare(f"vis-q-{ROUNDS - 1}", passive=True).method.message_count < 1:
            assert time.monotonic() < deadline, "the publish through v3 never arrived"
    finally:
        for ch in (first, second, third):
            ch.connection.close()


def test_a_binding_made_on_one_node_routes_publishes_of_another_at_once(
        nodes: dict[str, BrokerProcess]) -> None:
    """bind-ok means every node routes through the binding (RabbitMQ's -ok comes once the
    whole cluster has it): a mandatory publish made on another node right after it is
    routed, never returned unroutable (celery's remote-control replies did this)."""
    binder, publisher = channel(nodes["v1"]), channel(nodes["v2"])
    publisher.confirm_delivery()
    try:
        publisher.exchange_declare("vis-route", "direct")
        for i in range(ROUNDS):
            queue = f"vis-route-{i}"
            binder.queue_declare(queue, auto_delete=True)
            binder.queue_bind(queue, "vis-route", routing_key=queue)
            # confirmed, or UnroutableError had the binding not been there
            publisher.basic_publish("vis-route", queue, b"m", mandatory=True)
            assert binder.queue_declare(queue, passive=True).method.message_count == 1
            binder.queue_delete(queue)
    finally:
        for ch in (binder, publisher):
            ch.connection.close()


def test_a_real_404_is_answered_quickly(nodes: dict[str, BrokerProcess]) -> None:
    """A queue that exists nowhere: one etcd read and the 404, not a wait of seconds."""
    ch = channel(nodes["v2"])
    try:
        started = time.monotonic()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("vis-nowhere", passive=True)
        assert info.value.reply_code == 404
        assert time.monotonic() - started < 1.0
    finally:
        ch.connection.close()


def test_transient_queue_and_exchange_are_seen_on_every_node(
        nodes: dict[str, BrokerProcess]) -> None:
    """A non-durable, non-exclusive queue and exchange (and their binding) declared on v1
    are known on v2 and v3 at once: consumed on v2, published to on v3 (RabbitMQ's
    transient definitions are cluster-wide too; the queue lives on v1)."""
    first, second, third = (channel(nodes[n]) for n in NAMES)
    try:
        first.exchange_declare("vis-tx", "direct", durable=False)
        first.queue_declare("vis-tq", durable=False)
        first.queue_bind("vis-tq", "vis-tx", routing_key="k")
        got: list[bytes] = []
        second.basic_consume("vis-tq", lambda ch, m, p, body: got.append(body), auto_ack=True)
        third.exchange_declare("vis-tx", "direct", passive=True)
        third.basic_publish("vis-tx", "k", b"through v3")
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, "the message never reached v2's consumer"
            second.connection.process_data_events(time_limit=0.05)
        assert got == [b"through v3"]
        assert second.queue_declare("vis-tq", passive=True).method.queue == "vis-tq"
    finally:
        for ch in (first, second, third):
            ch.connection.close()


def test_transients_die_with_their_node(nodes: dict[str, BrokerProcess], tmp_path: Path) -> None:
    """kill -9 of the declaring node: once its lease expires, its transient queue and
    exchange are gone from the others (RabbitMQ deletes a dead node's transients), while
    a durable queue it leads stays known (down). The node killed is a fourth, v4: the
    module's three stay up for whatever test runs after this one."""
    assert nodes["v1"].etcd is not None and nodes["v1"].cluster_name is not None
    doomed = cluster_node(tmp_path, "v4", nodes["v1"].etcd, nodes["v1"].cluster_name)
    doomed.start()
    ch = channel(doomed)
    ch.queue_declare("vis-dies", durable=False)
    ch.exchange_declare("vis-dies-x", "fanout", durable=False)
    ch.queue_declare("vis-stays", durable=True)
    ch.connection.close()
    doomed.kill()
    deadline = time.monotonic() + 15

    def names(kind: str) -> set[str]:
        return {q["name"] for q in nodes["v2"].get_json(f"/api/{kind}")}

    while "vis-dies" in names("queues") or "vis-dies-x" in names("exchanges"):
        assert time.monotonic() < deadline, "v3's transients outlived v3"
        time.sleep(0.1)
    assert "vis-stays" in names("queues")
    other = channel(nodes["v2"])
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.queue_declare("vis-dies", passive=True)
        assert "no queue 'vis-dies'" in str(info.value)
    finally:
        other.connection.close()
    assert_clean_log(doomed)
