"""Idempotent producers over real sockets: confluent-kafka (enable.idempotence=true) and
kafka-python (enable_idempotence=True) produce exactly once in order; a batch sent again
with the same producer id, epoch and sequence is stored once and acknowledged with its
original offset, also after a clean restart and after a kill (the producer state is
rebuilt from the stored batch headers)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaProducer
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.wire import recv_frame


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of this test alone: it gets restarted and killed."""
    with own_kafka("smartbroker-idem-", why="restarts smartbroker itself") as proc:
        yield proc


def read_values(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": name("g"),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        m = c.poll(0.5)  # nothing more than expected
        if m is not None and not m.error():
            got.append(m.value())
    finally:
        c.close()
    return got


def test_confluent_idempotent_producer(kafka_broker: BrokerProcess) -> None:
    topic = name("idem-confluent")
    p = Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "enable.idempotence": True,
                  "linger.ms": 2})
    errors: list[Any] = []
    for i in range(500):
        p.produce(topic, b"%d" % i, partition=0,
                  on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(30) == 0 and errors == []
    assert read_values(kafka_broker.kafka_bootstrap, topic, 500) == [b"%d" % i for i in range(500)]


def test_kafka_python_idempotent_producer(kafka_broker: BrokerProcess) -> None:
    topic = name("idem-kp")
    p = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, enable_idempotence=True)
    try:
        futures = [p.send(topic, b"%d" % i, partition=0) for i in range(200)]
        p.flush(30)
        offsets = [f.get(10).offset for f in futures]
    finally:
        p.close(5)
    assert offsets == list(range(200))
    assert read_values(kafka_broker.kafka_bootstrap, topic, 200) == [b"%d" % i for i in range(200)]


class RawClient:
    """The two requests a retry needs, over a plain socket (a client library would not
    send the same sequence twice on purpose)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation = 0

    def call(self, request: Any, response_cls: Any) -> Any:
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="raw")
        self.sock.sendall(bytes(request.encode(header=True, framed=True)))
        return response_cls.decode(recv_frame(self.sock), version=request.API_VERSION,
                                   header=True)

    def init_producer_id(self) -> tuple[int, int]:
        r = self.call(InitProducerIdRequest(version=4, transactional_id=None,
                                            transaction_timeout_ms=60000), _response(22))
        assert r.error_code == 0
        return r.producer_id, r.producer_epoch

    def produce(self, topic: str, pid: int, epoch: int, seq: int, values: list[bytes]) -> tuple[int, int]:
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                            producer_id=pid, producer_epoch=epoch,
                                            base_sequence=seq, batch_size=1 << 20)
        for i, v in enumerate(values):
            builder.append(i, timestamp=int(time.time() * 1000), key=None, value=v, headers=[])
        data = bytes(builder.build())
        req = ProduceRequest(version=9, transactional_id=None, acks=-1, timeout_ms=10000,
                             topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[
                                 ProduceRequest.TopicProduceData.PartitionProduceData(
                                     index=0, records=data)])])
        r = self.call(req, _response(0))
        part = r.responses[0].partition_responses[0]
        return part.error_code, part.base_offset

    def close(self) -> None:
        self.sock.close()


def _response(api_key: int) -> Any:
    from kafka.protocol import producer
    for cls_name in producer.__all__:
        cls = getattr(producer, cls_name)
        if getattr(cls, "API_KEY", None) == api_key and not cls.is_request():
            return cls
    raise LookupError(api_key)


def test_duplicate_detected_across_restart_and_kill(own_broker: BrokerProcess) -> None:
    topic = name("idem-restart")
    client = RawClient(own_broker.kafka_port)
    pid, epoch = client.init_producer_id()
    assert client.produce(topic, pid, epoch, 0, [b"a", b"b"]) == (0, 0)  # creates the topic
    assert client.produce(topic, pid, epoch, 2, [b"c"]) == (0, 2)
    assert client.produce(topic, pid, epoch, 0, [b"a", b"b"]) == (0, 0)  # a retry
    client.close()

    own_broker.restart()
    client = RawClient(own_broker.kafka_port)
    assert client.produce(topic, pid, epoch, 2, [b"c"]) == (0, 2)  # still known
    assert client.produce(topic, pid, epoch, 5, [b"x"])[0] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert client.produce(topic, pid, epoch, 3, [b"d"]) == (0, 3)
    client.close()

    own_broker.kill()  # no snapshot on the way down: rebuilt from the batch headers
    own_broker.start()
    client = RawClient(own_broker.kafka_port)
    assert client.produce(topic, pid, epoch, 3, [b"d"]) == (0, 3)
    assert client.produce(topic, pid, epoch, 4, [b"e"]) == (0, 4)
    assert client.init_producer_id()[0] != pid  # producer ids are never handed out twice
    client.close()
    assert read_values(own_broker.kafka_bootstrap, topic, 5) == [b"a", b"b", b"c", b"d", b"e"]
