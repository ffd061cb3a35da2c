"""A Kafka client on a bare socket (``Raw``: requests from kafka-python's protocol classes,
pipelined or one at a time, no client library in the way) and what the abuse tests check
after each hostile request: another client still produces and fetches (``healthy``), and
the broker log has no ERROR or traceback since a ``mark`` (``quiet``)."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

from kafka.protocol import admin, consumer, metadata, producer
from kafka.record.default_records import DefaultRecordBatchBuilder

from tests.conftest import BrokerProcess
from tests.kafka.wire import recv_exactly


class Raw:
    """A Kafka client on a bare socket: requests from kafka-python's protocol classes,
    sent pipelined or one at a time, responses read by correlation id."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.corr = 0
        self.sent: dict[int, tuple[Any, int]] = {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def encode(self, cls: Any, version: int, **fields: Any) -> bytes:
        self.corr += 1
        req = cls(version=version, **fields)
        req.with_header(correlation_id=self.corr, client_id="abuse")
        self.sent[self.corr] = (cls, version)
        return bytes(req.encode(header=True, framed=True))

    def call(self, cls: Any, version: int, **fields: Any) -> Any:
        self.sock.sendall(self.encode(cls, version, **fields))
        return self.response()

    def response(self) -> Any:
        (size,) = struct.unpack(">i", self.recv(4))
        data = self.recv(size)
        (corr,) = struct.unpack_from(">i", data)
        cls, version = self.sent.pop(corr)
        return cls.RESPONSE_TYPE.decode(data, version=version, header=True) \
            if hasattr(cls, "RESPONSE_TYPE") else _response_class(cls).decode(
                data, version=version, header=True)

    def recv(self, n: int) -> bytes:
        return recv_exactly(self.sock, n)

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """The broker closed the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def _response_class(request_cls: Any) -> Any:
    name = request_cls.__name__.replace("Request", "Response")
    for module in (admin, consumer, metadata, producer):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(name)


def batch(values: list[bytes], key: bytes | None = None,
          headers: list[tuple[str, bytes]] | None = None) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=2**31 - 1)
    now = int(time.time() * 1000)
    for i, value in enumerate(values):
        builder.append(i, timestamp=now, key=key, value=value, headers=headers or [])
    return bytes(builder.build())


def produce(raw: Raw, topic: str, records: bytes, partition: int = 0, version: int = 7) -> Any:
    """One Produce (acks=-1); the partition response."""
    P = producer.ProduceRequest
    resp = raw.call(P, version, transactional_id=None, acks=-1, timeout_ms=10000, topic_data=[
        P.TopicProduceData(name=topic, partition_data=[
            P.TopicProduceData.PartitionProduceData(index=partition, records=records)])])
    return resp.responses[0].partition_responses[0]


def fetch_request(raw: Raw, topic: str, offset: int, max_wait_ms: int = 0,
                  max_bytes: int = 1 << 20, version: int = 11) -> bytes:
    F = consumer.FetchRequest
    return raw.encode(F, version, replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1,
                      max_bytes=max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                      topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(
                          partition=0, current_leader_epoch=-1, fetch_offset=offset,
                          log_start_offset=-1, partition_max_bytes=max_bytes)])],
                      forgotten_topics_data=[], rack_id="")


def fetch(raw: Raw, topic: str, offset: int, max_wait_ms: int = 0) -> Any:
    raw.sock.sendall(fetch_request(raw, topic, offset, max_wait_ms))
    return raw.response().responses[0].partitions[0]


def healthy(broker: BrokerProcess) -> None:
    """Another client still produces, fetches what it produced, and gets metadata."""
    topic = f"healthy-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        M = metadata.MetadataRequest
        meta = raw.call(M, 8, topics=[M.MetadataRequestTopic(name=topic)],
                        allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False)
        assert meta.topics[0].error_code in (0, 5), meta  # 5: LEADER_NOT_AVAILABLE, retry
        deadline = time.monotonic() + 5
        while (part := produce(raw, topic, batch([b"alive"]))).error_code == 5 \
                and time.monotonic() < deadline:  # auto-creation throttled: retry, as clients do
            time.sleep(0.05)
        assert part.error_code == 0, part
        got = fetch(raw, topic, part.base_offset)
        assert got.error_code == 0 and b"alive" in bytes(got.records), got


def quiet(broker: BrokerProcess, since: int) -> None:
    """No traceback and no ERROR line in the broker log after byte ``since``."""
    text = broker.log_path.read_text(errors="replace")[since:]
    bad = [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line]
    assert not bad, "\n".join(bad[:10])


def mark(broker: BrokerProcess) -> int:
    return len(broker.log_path.read_text(errors="replace"))


def create_topics(raw: Raw, topics: list[tuple[str, int, int]], version: int = 4) -> Any:
    C = admin.CreateTopicsRequest
    return raw.call(C, version, topics=[
        C.CreatableTopic(name=name, num_partitions=parts, replication_factor=rf,
                         assignments=[], configs=[]) for name, parts, rf in topics],
        timeout_ms=10000, validate_only=False)
