"""The demo's Kafka row without a broker: what it says when positions agree, differ or fail."""

from __future__ import annotations

from smartbroker.cli.demo.kafka_side import KafkaRead, describe, read_over_kafka
from smartbroker.launcher import free_port


def test_agreeing_positions_are_said_to_be_the_same() -> None:
    read = KafkaRead(count=200, seconds=0.5, poison=(2, 31), poison_key="order-25")
    text = describe(read, 200, (2, 31), "order-25")
    assert text.startswith("200 of 200 records read over Kafka (400/s)")
    assert ("the poison event is at partition 2, offset 31 with key order-25: the same "
            "partition, offset and key") in text


def test_disagreeing_positions_show_both() -> None:
    read = KafkaRead(count=200, seconds=1.0, poison=(1, 31), poison_key="order-25")
    text = describe(read, 200, (2, 31), "order-25")
    assert "AMQP saw (2, 31) with key order-25" in text and "the same" not in text


def test_a_missing_poison_event_and_an_error_are_reported() -> None:
    assert describe(KafkaRead(count=5, seconds=1.0), 9, None, None).endswith(
        "the poison event was not among them")
    assert describe(KafkaRead(error="boom"), 9, None, None) == "not shown: boom"


def test_no_listener_is_an_error_not_an_exception() -> None:
    read = read_over_kafka(f"127.0.0.1:{free_port()}", "t", 1, connect_timeout_ms=500)
    assert read.error is not None and read.count == 0
