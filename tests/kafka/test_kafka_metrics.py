"""The Kafka side in Prometheus and /api/overview, scraped after real clients worked:
requests by Kafka's request and error names, latency count and sum, records and batches
produced and fetched, connections and bytes, consumer groups by state, and
kafka_consumergroup_lag/current_offset per group, topic and partition, for Kafka and AMQP
groups alike. Counters are cumulative over the module's broker, so tests compare deltas."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

import httpx
import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smartbroker.launcher import BrokerProcess
from tests.kafka.sasl_helpers import wait_for
from tests.kafka.wire import frame, recv_frame

pytestmark = pytest.mark.extension  # smartbroker's metrics, not a Kafka broker's behaviour

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(proc: BrokerProcess) -> Samples:
    """Every sample of GET /metrics (unauthenticated, as RabbitMQ's plugin)."""
    text = httpx.get(f"http://127.0.0.1:{proc.management_port}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce(proc: BrokerProcess, topic: str, count: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=proc.kafka_bootstrap, linger_ms=200,
                             batch_size=1 << 20)
    try:
        for i in range(count):
            producer.send(topic, b"v%d" % i, partition=0)
        producer.flush(timeout=15)
    finally:
        producer.close()


def _frame(api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    return frame(struct.pack(">hhih", api_key, version, correlation, 1) + b"m" + body)


def test_produce_and_fetch_counted(kafka_broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, TopicPartition

    topic = topic_name("metrics")
    produce(kafka_broker, topic, 1)  # auto-creates the topic (Metadata, first Produce)
    before = scrape(kafka_broker)
    produce(kafka_broker, topic, 25)
    after = scrape(kafka_broker)
    assert delta(after, before, "kafka_server_produced_records_total") == 25
    batches = delta(after, before, "kafka_server_produced_batches_total")
    assert 1 <= batches <= 25
    produces = delta(after, before, "kafka_network_requests_total", request="Produce")
    assert produces >= 1
    # one partition per Produce: one code per request, all NONE
    assert delta(after, before, "kafka_network_request_errors_total", request="Produce",
                 error="NONE") == produces
    assert delta(after, before, "kafka_network_request_duration_seconds_count",
                 request="Produce") == produces
    assert delta(after, before, "kafka_network_request_duration_seconds_sum",
                 request="Produce") > 0

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             enable_auto_commit=False, group_id=None)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek(TopicPartition(topic, 0), 0)
        got = 0
        deadline = time.monotonic() + 15
        while got < 26 and time.monotonic() < deadline:
            got += sum(len(r) for r in consumer.poll(500).values())
    finally:
        consumer.close()
    assert got == 26
    fetched = scrape(kafka_broker)
    assert delta(fetched, after, "kafka_server_fetched_records_total") >= 26
    assert delta(fetched, after, "kafka_server_fetched_batches_total") >= 2
    assert delta(fetched, after, "kafka_network_requests_total", request="Fetch") >= 1
    assert delta(fetched, after, "kafka_network_request_errors_total", request="Fetch",
                 error="NONE") >= 2  # the top-level code and the partition's
    assert delta(fetched, after, "kafka_network_requests_total", request="ListOffsets") >= 0
    assert value(fetched, "kafka_network_incoming_bytes_total") > 0
    assert value(fetched, "kafka_network_outgoing_bytes_total") > 0


def test_error_codes_by_kafka_name(kafka_broker: BrokerProcess) -> None:
    before = scrape(kafka_broker)
    host, port = kafka_broker.kafka_bootstrap.split(":")
    bad = b"bad name!"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # Metadata v1 for a topic name Kafka forbids: INVALID_TOPIC_EXCEPTION
        sock.sendall(_frame(3, 1, 7, struct.pack(">ih", 1, len(bad)) + bad))
        recv_frame(sock)
    after = scrape(kafka_broker)
    assert delta(after, before, "kafka_network_request_errors_total", request="Metadata",
                 error="INVALID_TOPIC_EXCEPTION") == 1
    assert delta(after, before, "kafka_network_requests_total", request="Metadata") == 1


def test_connections_bytes_and_overview(kafka_broker: BrokerProcess) -> None:
    before = scrape(kafka_broker)
    open_before = value(before, "kafka_connections")
    host, port = kafka_broker.kafka_bootstrap.split(":")
    request = _frame(18, 0, 1, b"")  # ApiVersions v0
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(request)
        answer = recv_frame(sock)
        during = scrape(kafka_broker)
        assert value(during, "kafka_connections") == open_before + 1
        assert delta(during, before, "kafka_connections_opened_total") == 1
        assert delta(during, before, "kafka_network_incoming_bytes_total") == len(request)
        assert delta(during, before, "kafka_network_outgoing_bytes_total") == len(answer) + 4
        overview = kafka_broker.get_json("/api/overview")
        assert {"node": overview["node"], "protocol": "kafka", "ip_address": "127.0.0.1",
                "port": kafka_broker.kafka_port} in overview["listeners"]
        assert {"amqp", "http", "kafka"} <= {lst["protocol"] for lst in overview["listeners"]}
        assert overview["connection_totals"]["kafka"] >= 1
        assert overview["object_totals"]["connections"] >= overview["connection_totals"]["kafka"]
        assert overview["kafka"]["vhost"] == "/"
    finally:
        sock.close()
    closed = wait_for(lambda: (s := scrape(kafka_broker))
                      and value(s, "kafka_connections") == open_before and s)
    assert closed, "the closed connection is still counted"
    # a closed connection's bytes stay in the totals
    assert delta(closed, before, "kafka_network_incoming_bytes_total") >= len(request)


def test_group_lag_and_states(kafka_broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = topic_name("lag"), topic_name("group")
    produce(kafka_broker, topic, 10)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, None, -1)})
    finally:
        consumer.close()
    labels = {"vhost": "/", "group": group, "topic": topic, "partition": "0"}
    samples = scrape(kafka_broker)
    assert value(samples, "kafka_consumergroup_current_offset", **labels) == 4
    assert value(samples, "kafka_consumergroup_lag", **labels) == 6
    assert value(samples, "kafka_consumergroups", state="Empty") >= 1
    produce(kafka_broker, topic, 5)  # lag is computed at scrape time
    assert value(scrape(kafka_broker), "kafka_consumergroup_lag", **labels) == 11

    stable_before = value(samples, "kafka_consumergroups", state="Stable")
    member = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                       "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment(), "the member got no partition"
        stable = scrape(kafka_broker)
        assert value(stable, "kafka_consumergroups", state="Stable") == stable_before + 1
        assert value(stable, "kafka_consumergroup_lag", **labels) == 11
    finally:
        member.close()


def test_amqp_group_lag_in_the_same_metric(kafka_broker: BrokerProcess) -> None:
    name, group = topic_name("amqp-lag"), topic_name("amqp-group")
    labels = {"vhost": "/", "group": group, "topic": name, "partition": "0"}

    def offset_is(expected: int) -> Any:
        s = scrape(kafka_broker)
        return s if value(s, "kafka_consumergroup_current_offset", **labels) == expected else None

    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
        ch.confirm_delivery()
        for i in range(6):
            ch.basic_publish("", name, b"m%d" % i)
        ch.basic_qos(prefetch_count=10)
        for method, props, _body in ch.consume(name, inactivity_timeout=5, arguments={
                "x-consumer-group": group, "x-stream-offset": "first"}):
            assert method is not None, "the AMQP group member got too few messages"
            ch.basic_ack(method.delivery_tag)  # a group member commits as it acks
            if props.headers["x-stream-offset"] == 5:
                break
        samples = wait_for(lambda: offset_is(6))
        assert samples, "the AMQP group's commit is not in kafka_consumergroup_current_offset"
        assert value(samples, "kafka_consumergroup_lag", **labels) == 0
        assert value(samples, "kafka_consumergroups", state="Stable") >= 1  # it consumes
        ch.cancel()  # nothing unacked: all six were acked
        for i in range(3):
            ch.basic_publish("", name, b"n%d" % i)
        samples = scrape(kafka_broker)
        assert value(samples, "kafka_consumergroup_lag", **labels) == 3
        ch.queue_delete(name)
    finally:
        conn.close()
