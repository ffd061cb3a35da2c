"""The Kafka counters (kafka/stats.py) and their Prometheus collector
(management/kafka_metrics.py), without a socket: request and error counting on the
library's response objects, batch counting on RecordBatch bytes (hostile ones included),
and the exposition of a listener's counters and of consumer groups' offsets and lag."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.stats import KafkaStats, api_name, batch_counts, register
from smartbroker.management.kafka_metrics import KafkaCollector, error_name
from smartbroker.queues.stream_partitions import StreamPartitions

pytestmark = pytest.mark.extension


def records(first: int, count: int) -> bytes:
    return codec.write_batch_at([(first + i, 1000 + i, None, b"v%d" % i, [])
                                 for i in range(count)])


def produce_response(*codes: int) -> Any:
    cls = codec.response_class(0)
    part = cls.TopicProduceResponse.PartitionProduceResponse
    return cls(version=9, throttle_time_ms=0, responses=[cls.TopicProduceResponse(
        name="t", partition_responses=[
            part(index=i, error_code=code, base_offset=-1, log_append_time_ms=-1,
                 log_start_offset=-1, record_errors=[], error_message=None)
            for i, code in enumerate(codes)])])


def fetch_response(*parts: tuple[int, bytes]) -> Any:
    cls = codec.response_class(codec.FETCH)
    data = cls.FetchableTopicResponse.PartitionData
    return cls(version=12, throttle_time_ms=0, error_code=0, session_id=0, responses=[
        cls.FetchableTopicResponse(topic="t", topic_id=None, partitions=[
            data(partition_index=i, error_code=code, high_watermark=0, last_stable_offset=0,
                 log_start_offset=0, aborted_transactions=[], preferred_read_replica=-1,
                 records=payload) for i, (code, payload) in enumerate(parts)])])


# -- names -------------------------------------------------------------------------------

def test_request_and_error_names_are_kafkas() -> None:
    assert api_name(0) == "Produce"
    assert api_name(codec.FETCH) == "Fetch"
    assert api_name(11) == "JoinGroup"
    assert api_name(18) == "ApiVersions"
    assert api_name(32767) == "32767"
    assert error_name(0) == "NONE"
    assert error_name(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) == "UNKNOWN_TOPIC_OR_PARTITION"
    assert error_name(-12345) == "-12345"


# -- batch counting ----------------------------------------------------------------------

def test_batches_and_records_counted_from_headers() -> None:
    data = records(0, 3) + records(3, 5)
    assert batch_counts(data) == (2, 8)
    assert batch_counts(memoryview(data)) == (2, 8)
    assert batch_counts(data[:-1]) == (1, 3)  # a batch cut at max bytes is not counted
    assert batch_counts(b"") == (0, 0)
    assert batch_counts(None) == (0, 0)


def test_transaction_markers_are_not_records() -> None:
    data = records(0, 2) + codec.control_batch(7, 0, True, 0, 1000)
    assert batch_counts(data) == (1, 2)


@pytest.mark.parametrize("junk", [b"\xff" * 61, b"\x00" * 61, b"\x00" * 8 + struct.pack(">i", -50)
                                  + b"\x00" * 100, bytes(range(256)) * 3])
def test_hostile_bytes_never_raise_or_loop(junk: bytes) -> None:
    batches, count = batch_counts(junk)
    assert batches >= 0


# -- answered requests -------------------------------------------------------------------

def test_produce_codes_counted_per_partition() -> None:
    stats = KafkaStats()
    stats.answered(0, produce_response(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0), 0.0)
    stats.answered(0, None, 0.0)  # acks=0: counted, no codes
    per = stats.apis[0]
    assert per.count == 2
    assert per.seconds > 0
    assert per.errors == {0: 2, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: 1}


def test_fetch_counts_codes_and_records() -> None:
    stats = KafkaStats()
    body = fetch_response((0, records(0, 4) + records(4, 6)), (ErrorCode.OFFSET_OUT_OF_RANGE, b""))
    stats.answered(codec.FETCH, body, 0.0)
    assert stats.apis[codec.FETCH].errors == {0: 2, ErrorCode.OFFSET_OUT_OF_RANGE: 1}
    assert stats.fetched == [2, 10]


def test_codes_found_in_any_response_from_its_schema() -> None:
    stats = KafkaStats()
    join = codec.response_class(11)
    stats.answered(11, join(version=5, throttle_time_ms=0, error_code=ErrorCode.NOT_COORDINATOR,
                            generation_id=-1, protocol_type=None, protocol_name="",
                            leader="", skip_assignment=False, member_id="", members=[]), 0.0)
    assert stats.apis[11].errors == {ErrorCode.NOT_COORDINATOR: 1}
    delete = codec.response_class(20)  # DeleteTopics: a code per topic, none at the top
    result = delete.DeletableTopicResult
    stats.answered(20, delete(version=4, throttle_time_ms=0, responses=[
        result(name="a", topic_id=None, error_code=0, error_message=None),
        result(name="b", topic_id=None, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
               error_message=None)]), 0.0)
    assert stats.apis[20].errors == {0: 1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: 1}


def test_a_body_without_a_schema_is_only_counted() -> None:
    stats = KafkaStats()
    stats.answered(42, object(), 0.0)
    assert stats.apis[42].count == 1 and stats.apis[42].errors == {}


# -- the collector -----------------------------------------------------------------------

@dataclass
class Log:
    first_offset: int
    next_offset: int


@dataclass
class Groups:
    offsets: dict[tuple[str, int], int]
    active: set[str] = field(default_factory=set)

    @property
    def book(self) -> Any:
        return SimpleNamespace(offsets=self.offsets)

    @property
    def live(self) -> dict[str, Any]:
        return dict.fromkeys(self.active)

    def names(self) -> list[str]:
        return sorted({g for g, _ in self.offsets} | self.active)

    def amqp_active(self, name: str) -> bool:
        return name in self.active


class Broker:
    """What the collector reads of a broker (a class: the listener registry is weak)."""

    def __init__(self, vhosts: dict[str, Any]) -> None:
        self.vhosts = vhosts


class Listener(SimpleNamespace):
    """A KafkaListener's attributes the collector reads (weakly referable, as the real one)."""


def stream(name: str, logs: list[Log], groups: Groups) -> Any:
    s = SimpleNamespace(name=name, logs=logs, groups=groups, limits=None,  # not replicated
                        capabilities=SimpleNamespace(offset_log=True))
    s.partitions = StreamPartitions(s)  # type: ignore[arg-type]  # what StreamQueue gives
    return s


def classic(name: str) -> Any:
    return SimpleNamespace(name=name, capabilities=SimpleNamespace(offset_log=False))


def scrape(state: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KafkaCollector(state))
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_groups_lag_and_states_without_kafka() -> None:
    """AMQP groups in any vhost, Kafka off: the one group model in one metric."""
    orders = stream("orders", [Log(0, 10), Log(5, 8)],
                    Groups({("g1", 0): 4, ("g1", 1): 2, ("g2", 0): 10}, active={"g2"}))
    broker = Broker({"/": SimpleNamespace(queues={"orders": orders, "q": classic("q")})})
    samples = scrape(SimpleNamespace(broker=broker))

    def lag(group: str, partition: int) -> float | None:
        return samples.get(("kafka_consumergroup_lag", frozenset(
            {"vhost": "/", "group": group, "topic": "orders",
             "partition": str(partition)}.items())))
    assert lag("g1", 0) == 6
    assert lag("g1", 1) == 3  # committed 2 is before the first offset kept (5): reads from 5
    assert lag("g2", 0) == 0
    assert lag("g2", 1) is None  # no commit there: not reported, as exporters do
    current = ("kafka_consumergroup_current_offset", frozenset(
        {"vhost": "/", "group": "g1", "topic": "orders", "partition": "1"}.items()))
    assert samples[current] == 5
    assert samples[("kafka_consumergroups", frozenset({("state", "Stable")}))] == 1
    assert samples[("kafka_consumergroups", frozenset({("state", "Empty")}))] == 1
    assert not any(name.startswith("kafka_network") for name, _ in samples)


def test_listener_counters_exposed() -> None:
    stats = KafkaStats()
    stats.answered(0, produce_response(0, ErrorCode.KAFKA_STORAGE_ERROR), 0.0)
    stats.answered(codec.FETCH, fetch_response((0, records(0, 3))), 0.0)
    stats.opened = 3
    stats.retired_bytes = [100, 200]
    coordinator = SimpleNamespace(groups={
        "k1": SimpleNamespace(state="PreparingRebalance", members={"m": 1}),
        "k2": SimpleNamespace(state="Stable", members={"m": 1}),
        "k3": SimpleNamespace(state="Empty", members={}),  # offsets only: Empty
        "k4": SimpleNamespace(state="Dead", members={})})
    listener = Listener(
        stats=stats,
        connections=[SimpleNamespace(record=SimpleNamespace(bytes_in=5, bytes_out=7))],
        handlers=SimpleNamespace(producer=SimpleNamespace(appended=[4, 40]),
                                 node=SimpleNamespace(vhost="kafka"),
                                 coordinator=coordinator))
    topic = stream("t", [Log(0, 5)], Groups({("k2", 0): 1, ("k3", 0): 2}))
    broker = Broker({"kafka": SimpleNamespace(queues={"t": topic})})
    register(broker, listener)
    samples = scrape(SimpleNamespace(broker=broker))
    del listener
    assert not any(n.startswith("kafka_network") for n, _ in scrape(SimpleNamespace(broker=broker)))

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]
    assert value("kafka_network_requests_total", request="Produce") == 1
    assert value("kafka_network_requests_total", request="Fetch") == 1
    assert value("kafka_network_request_duration_seconds_count", request="Produce") == 1
    assert value("kafka_network_request_duration_seconds_sum", request="Produce") > 0
    assert value("kafka_network_request_errors_total", request="Produce",
                 error="KAFKA_STORAGE_ERROR") == 1
    assert value("kafka_network_request_errors_total", request="Fetch", error="NONE") == 2
    assert value("kafka_network_incoming_bytes_total") == 105
    assert value("kafka_network_outgoing_bytes_total") == 207
    assert value("kafka_connections") == 1
    assert value("kafka_connections_opened_total") == 3
    assert value("kafka_server_produced_batches_total") == 4
    assert value("kafka_server_produced_records_total") == 40
    assert value("kafka_server_fetched_batches_total") == 1
    assert value("kafka_server_fetched_records_total") == 3
    assert value("kafka_consumergroups", state="PreparingRebalance") == 1
    assert value("kafka_consumergroups", state="Stable") == 1
    assert value("kafka_consumergroups", state="Empty") == 1
    assert value("kafka_consumergroup_lag", vhost="kafka", group="k3", topic="t",
                 partition="0") == 3
