"""Kafka clients on ``smartbroker serve --workers 2``: the shared Kafka port bootstraps,
Metadata names each worker at a port of its own, so confluent-kafka reaches each
partition's leader (a connection to the shared port lands on either worker)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from smartbroker.cluster.etcd_process import etcd_binary
from smartbroker.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0

pytestmark = [pytest.mark.skipif(etcd_binary() is None, reason="no etcd binary (etcd-server)"),
              pytest.mark.slow]  # a supervisor, its etcd and two workers: ~12 s


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("kafka-workers")
    kafka_port = free_port()
    log_path = tmp / "workers.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartbroker", "serve", "--workers", "2",
             "--host", "127.0.0.1", "--port", str(free_port()),
             "--management-port", str(free_port()), "--prometheus-port", "0",
             "--kafka-port", str(kafka_port), "--data-dir", str(tmp / "data")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while "2 workers serving AMQP" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.05)
        yield kafka_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text


def test_each_worker_is_a_broker_and_clients_find_the_leader(workers: int) -> None:
    bootstrap = f"127.0.0.1:{workers}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=TIMEOUT)
    ports = {b.port for b in meta.brokers.values()}
    assert len(meta.brokers) == 2 and len(ports) == 2 and workers not in ports
    admin.create_topics([NewTopic("spread", num_partitions=1)])["spread"].result(TIMEOUT)

    producer = Producer({"bootstrap.servers": bootstrap})
    errors: list[Any] = []
    for i in range(20):
        producer.produce("spread", value=b"m%d" % i,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(TIMEOUT) == 0 and errors == []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-workers",
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["spread"])
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 20 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                got.append(msg.value())
            elif msg.error().code() not in (KafkaError._PARTITION_EOF,
                                            KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise AssertionError(msg.error())  # (a worker may not know it yet)
        assert got == [b"m%d" % i for i in range(20)]
    finally:
        consumer.close()
