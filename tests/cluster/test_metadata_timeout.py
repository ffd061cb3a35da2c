"""etcd not answering never leaves a declare waiting forever (issue 15): a definitions
change waits ``cluster_metadata_timeout`` for its etcd commit, then the client gets
RabbitMQ's Khepri answer (541 "... the metadata store operation timed out", a connection
error; 503 service_unavailable from the HTTP API), while publishing to existing queues
goes on. One real node and an etcd of this module's own, frozen with SIGSTOP."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.conftest import private_etcd
from tests.cluster.http_api import call
from tests.cluster.node_group import start_all, stop_all

TIMEOUT = 1.5  # the node's cluster_metadata_timeout
SLACK = 1.5  # a loaded 2-core machine's scheduling on top of it


@pytest.fixture(scope="module")
def frozen_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """An etcd of this module's own: the test freezes it."""
    with private_etcd(tmp_path_factory.mktemp("etcd")) as proc:
        yield proc


@pytest.fixture(scope="module")
def node(frozen_etcd: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("metadata-timeout")
    proc = BrokerProcess(tmp / "data", log_path=tmp / "t1.log", etcd=frozen_etcd.endpoint,
                         node_name="t1", cluster_name=f"mt-{free_port()}",
                         env={"SMARTBROKER_CLUSTER_METADATA_TIMEOUT": str(TIMEOUT)})
    try:
        start_all([proc])
        yield proc
    finally:
        stop_all([proc])


def test_declares_time_out_while_etcd_is_frozen_and_publishing_goes_on(
        frozen_etcd: EtcdProcess, node: BrokerProcess) -> None:
    publisher = pika.BlockingConnection(pika.URLParameters(node.url))
    pub = publisher.channel()
    pub.queue_declare("mt.kept", durable=True)
    pub.confirm_delivery()
    outcome: list[tuple[float, BaseException | None]] = []

    def declare() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(node.url))
        ch = conn.channel()
        start = time.monotonic()
        try:
            ch.queue_declare("mt.new", durable=True)
            outcome.append((time.monotonic() - start, None))
            conn.close()
        except pika.exceptions.ConnectionClosedByBroker as exc:
            outcome.append((time.monotonic() - start, exc))

    assert frozen_etcd.proc is not None
    os.kill(frozen_etcd.proc.pid, signal.SIGSTOP)
    try:
        waiter = threading.Thread(target=declare)
        waiter.start()
        confirmed = 0
        while waiter.is_alive() and confirmed < 200:  # the other client keeps publishing
            pub.basic_publish("", "mt.kept", b"m", mandatory=True)  # raises if nacked
            confirmed += 1
        waiter.join(TIMEOUT + SLACK + 5)
        assert outcome, "the declare was still waiting"
        took, err = outcome[0]
        assert isinstance(err, pika.exceptions.ConnectionClosedByBroker), outcome
        assert err.reply_code == 541
        assert err.reply_text == ("INTERNAL_ERROR - could not queue.declare because the "
                                  "metadata store operation timed out")
        assert TIMEOUT - 0.2 <= took < TIMEOUT + SLACK, took
        assert confirmed >= 10, f"only {confirmed} publishes confirmed during the wait"

        start = time.monotonic()
        status, body = call(node, "/api/queues/%2F/mt.http", {"durable": True}, "PUT")
        took = time.monotonic() - start
        assert status == 503 and body["error"] == "service_unavailable", (status, body)
        assert "metadata store operation timed out" in body["reason"]
        assert took < TIMEOUT + SLACK, took
    finally:
        os.kill(frozen_etcd.proc.pid, signal.SIGCONT)
    assert pub.queue_declare("mt.kept", passive=True).method.message_count == confirmed
    # etcd answers again: declares are answered -ok, and the timed-out ones landed too
    pub.queue_declare("mt.after", durable=True)
    status, _ = call(node, "/api/queues/%2F/mt.after2", {"durable": True}, "PUT")
    assert status in (201, 204)
    names = {q["name"] for q in call(node, "/api/queues/%2F")[1]}
    assert {"mt.kept", "mt.new", "mt.http", "mt.after", "mt.after2"} <= names
    publisher.close()
