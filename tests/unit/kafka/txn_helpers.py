"""Requests of the idempotence and transaction APIs, built for the handler unit tests
(test_producer_state_produce.py, test_transactions_handlers.py)."""

from __future__ import annotations

from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.handlers import KafkaHandlers, Node
from tests.unit.kafka.kafka_fixtures import SESSION

TS = 1_700_000_000_000


def handlers(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("h", 9092, Node.cluster_id_for("x"), "/"))


def call(h: KafkaHandlers, api_key: int, version: int, **fields: Any) -> Any:
    body = codec.REQUESTS[api_key](version=version, **fields)
    return h.handle(codec.Request(codec.Header(api_key, version, 1, "c"), body), SESSION)


def data(pid: int, epoch: int, seq: int, n: int = 1, txn: bool = False) -> bytes:
    return codec.write_batch([(TS + i, None, b"v%d-%d" % (seq, i), []) for i in range(n)],
                             producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                             transactional=txn)


def init(h: KafkaHandlers, txn_id: str | None = None, version: int = 4,
         timeout_ms: int = 60000) -> tuple[int, int, int]:
    r = call(h, 22, version, transactional_id=txn_id, transaction_timeout_ms=timeout_ms)
    return r.error_code, r.producer_id, r.producer_epoch


def add_partitions(h: KafkaHandlers, txn_id: str, pid: int, epoch: int,
                   parts: list[tuple[str, list[int]]], version: int = 3) -> list[int]:
    req = codec.REQUESTS[24]
    r = call(h, 24, version, v3_and_below_transactional_id=txn_id,
             v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
             v3_and_below_topics=[req.AddPartitionsToTxnTopic(name=n, partitions=p)
                                  for n, p in parts])
    return [p.partition_error_code for t in r.results_by_topic_v3_and_below
            for p in t.results_by_partition]


def end(h: KafkaHandlers, txn_id: str, pid: int, epoch: int, commit: bool,
        version: int = 3) -> int:
    r = call(h, 26, version, transactional_id=txn_id, producer_id=pid, producer_epoch=epoch,
             committed=commit)
    assert not hasattr(r, "__await__"), "in-memory streams answer at once"
    return r.error_code


def fetch(h: KafkaHandlers, partition: int, isolation: int, offset: int = 0) -> Any:
    req = codec.REQUESTS[1]
    body = req(version=11, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
               isolation_level=isolation, session_id=0, session_epoch=-1,
               topics=[req.FetchTopic(topic="orders", partitions=[req.FetchTopic.FetchPartition(
                   partition=partition, current_leader_epoch=-1, fetch_offset=offset,
                   log_start_offset=-1, partition_max_bytes=1 << 20)])],
               forgotten_topics_data=[], rack_id="")
    part = h.handle(codec.Request(codec.Header(1, 11, 1, "c"), body), SESSION).responses[0].partitions[0]
    values = [r.value for r in codec.read_records(part.records)]
    return part, values
