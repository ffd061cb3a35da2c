"""max.message.bytes, compression.type and message.format.version through the handlers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.errors import AMQPError
from smartbroker.kafka import codec, configs
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.queues.stream_args import StreamSettings
from tests.unit.kafka.kafka_fixtures import broker_with
from tests.unit.kafka.test_admin_apis import DELETE, SET, alter, described, incremental
from tests.unit.kafka.test_admin_handlers import create
from tests.unit.kafka.test_kafka_produce import produce, results

TS = 1_700_000_000_000


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": {"x-queue-type": "stream", "x-partitions": 1}})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("kafka.example", 9092, Node.cluster_id_for("x"), "/"))


def sized(size: int) -> bytes:
    """One uncompressed batch of about ``size`` bytes."""
    return codec.write_batch([(TS, b"k", b"v" * size, [])])


def code(h: KafkaHandlers, topic: str, data: bytes) -> int:
    [(_, _, error, _)] = results(produce(h, [(topic, 0, data)]))
    return error


# -- max.message.bytes ---------------------------------------------------------------------

def test_max_message_bytes_at_create_limits_produce(h: KafkaHandlers, broker: Broker) -> None:
    [r] = create(h, ("small", 1, -1, {"max.message.bytes": "2000"}))
    assert (r.error_code, r.error_message) == (0, None)
    assert broker.vhosts["/"].queues["small"].arguments["x-max-message-bytes"] == 2000
    assert described(h, "small")["max.message.bytes"] == ("2000", 1)  # DYNAMIC_TOPIC_CONFIG
    assert code(h, "small", sized(5000)) == ErrorCode.MESSAGE_TOO_LARGE
    assert code(h, "small", sized(100)) == 0


def test_unset_max_message_bytes_is_the_brokers(h: KafkaHandlers, broker: Broker) -> None:
    assert described(h, "orders")["max.message.bytes"] == (
        str(broker.config.max_message_size), 5)  # DEFAULT_CONFIG


def test_alter_and_delete_max_message_bytes(h: KafkaHandlers, broker: Broker) -> None:
    assert code(h, "orders", sized(5000)) == 0
    assert alter(h, "orders", {"max.message.bytes": "3000"}) == (0, None)
    assert code(h, "orders", sized(5000)) == ErrorCode.MESSAGE_TOO_LARGE
    assert incremental(h, "orders", [("max.message.bytes", SET, "10000")]) == (0, None)
    assert described(h, "orders")["max.message.bytes"] == ("10000", 1)
    assert code(h, "orders", sized(5000)) == 0
    assert code(h, "orders", sized(20000)) == ErrorCode.MESSAGE_TOO_LARGE
    assert incremental(h, "orders", [("max.message.bytes", DELETE, None)]) == (0, None)
    assert described(h, "orders")["max.message.bytes"][1] == 5
    assert code(h, "orders", sized(20000)) == 0


@pytest.mark.parametrize("value", ["-1", "lots", "2147483648", "1.5"])
def test_bad_max_message_bytes_is_invalid_config(h: KafkaHandlers, value: str) -> None:
    [r] = create(h, ("bad", 1, -1, {"max.message.bytes": value}))
    assert r.error_code == ErrorCode.INVALID_CONFIG
    assert alter(h, "orders", {"max.message.bytes": value})[0] == ErrorCode.INVALID_CONFIG
    assert described(h, "orders")["max.message.bytes"][1] == 5


def test_the_broker_limit_wins_over_a_larger_topic_value(h: KafkaHandlers,
                                                         broker: Broker) -> None:
    broker_max = broker.config.max_message_size
    assert alter(h, "orders", {"max.message.bytes": str(2**31 - 1)}) == (0, None)
    assert configs.message_limit(broker.vhosts["/"].queues["orders"], broker_max) == broker_max
    assert alter(h, "orders", {"max.message.bytes": "0"}) == (0, None)
    assert configs.message_limit(broker.vhosts["/"].queues["orders"], broker_max) == 0


@pytest.mark.extension
def test_amqp_declare_checks_x_max_message_bytes() -> None:
    args: dict[str, Any] = {"x-queue-type": "stream", "x-max-message-bytes": 4096}
    StreamSettings.parse("s", "/", True, False, False, args)
    for bad in ("4096", -1, 2**31):
        with pytest.raises(AMQPError):
            StreamSettings.parse("s", "/", True, False, False, {**args, "x-max-message-bytes": bad})


# -- compression.type ----------------------------------------------------------------------

def test_compression_type_producer_is_accepted_and_shown(h: KafkaHandlers,
                                                          broker: Broker) -> None:
    [r] = create(h, ("c", 1, -1, {"compression.type": "producer"}))
    assert (r.error_code, r.error_message) == (0, None)
    assert "compression.type" not in str(broker.vhosts["/"].queues["c"].arguments)
    assert described(h, "c")["compression.type"] == ("producer", 5)
    assert alter(h, "orders", {"compression.type": "producer"}) == (0, None)
    assert incremental(h, "orders", [("compression.type", SET, "producer")]) == (0, None)
    assert incremental(h, "orders", [("compression.type", DELETE, None)]) == (0, None)


@pytest.mark.parametrize("codec_name", ["gzip", "snappy", "lz4", "zstd", "uncompressed"])
def test_broker_side_compression_is_kept_in_overrides(h: KafkaHandlers, broker: Broker,
                                                      codec_name: str) -> None:
    """Kafka's codecs are accepted (they used to be refused): kept in the stream's
    overrides, never among its declared arguments, and described as a topic config."""
    [r] = create(h, ("c", 1, -1, {"compression.type": codec_name}))
    assert (r.error_code, r.error_message) == (0, None)
    queue = broker.vhosts["/"].queues["c"]
    assert "x-compression-type" not in queue.arguments
    assert queue.meta.overrides == {"x-compression-type": codec_name}
    assert described(h, "c")["compression.type"] == (codec_name, 1)
    assert incremental(h, "orders", [("compression.type", SET, codec_name)]) == (0, None)
    assert described(h, "orders")["compression.type"] == (codec_name, 1)
    assert incremental(h, "orders", [("compression.type", DELETE, None)]) == (0, None)
    assert described(h, "orders")["compression.type"] == ("producer", 5)


def test_unknown_compression_type_is_invalid(h: KafkaHandlers) -> None:
    err, message = alter(h, "orders", {"compression.type": "brotli"})
    assert err == ErrorCode.INVALID_CONFIG and "must be one of" in (message or "")


# -- message.format.version ----------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.8", "3.0-IV1", "0.10.2-IV0", "3.6.1", "0.10.0.0"])
def test_message_format_version_is_accepted_and_ignored(h: KafkaHandlers, broker: Broker,
                                                        version: str) -> None:
    [r] = create(h, ("m", 1, -1, {"message.format.version": version}))
    assert (r.error_code, r.error_message) == (0, None)
    assert broker.vhosts["/"].queues["m"].arguments == {"x-queue-type": "stream",
                                                        "x-partitions": 1}
    assert described(h, "m")["message.format.version"] == ("3.0-IV1", 5)
    assert alter(h, "orders", {"message.format.version": version}) == (0, None)


def test_a_bad_message_format_version_is_invalid(h: KafkaHandlers) -> None:
    [r] = create(h, ("m", 1, -1, {"message.format.version": "latest"}))
    assert r.error_code == ErrorCode.INVALID_CONFIG
