"""group.min/max.session.timeout.ms as settings: JoinGroup refuses a session timeout
outside them (INVALID_SESSION_TIMEOUT, as Kafka's GroupCoordinator does) and
DescribeConfigs for the broker shows them, with listeners and advertised.listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config, ConfigError
from smartbroker.kafka import codec
from smartbroker.kafka.admin import BROKER
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node, Session
from smartbroker.kafka.join import JOIN_GROUP
from smartbroker.kafka.membership import encode_subscription

SESSION = Session("10.1.2.3:50000", "10.1.2.3")
DEFAULT = 5  # DescribeConfigs config_source DEFAULT_CONFIG


def handlers(**settings: Any) -> Iterator[KafkaHandlers]:
    broker = Broker(Config(**settings))
    node = Node(settings.get("kafka_advertised_host"), 9092, Node.cluster_id_for("x"), "/")
    yield KafkaHandlers(broker, node)


@pytest.fixture
def low() -> Iterator[KafkaHandlers]:
    yield from handlers(kafka_group_min_session_timeout_ms=1000,
                        kafka_group_max_session_timeout_ms=5000)


@pytest.fixture
def default() -> Iterator[KafkaHandlers]:
    yield from handlers()


def call(h: KafkaHandlers, api_key: int, version: int, body: Any) -> Any:
    """The answer as a client decodes it (a waiting JoinGroup awaited on a real loop)."""
    async def ask() -> Any:
        resp = h.handle(Request(Header(api_key, version, 7, "client"), body), SESSION)
        return await resp if isinstance(resp, asyncio.Future) else resp

    wire = codec.encode_response(api_key, version, 7, asyncio.run(ask()))
    return codec.response_class(api_key).decode(wire[4:], version=version, header=True)


def join_code(h: KafkaHandlers, session_ms: int) -> int:
    """A first v7 join's error code: MEMBER_ID_REQUIRED once the timeout is accepted."""
    cls = codec.REQUESTS[JOIN_GROUP]
    body = cls(version=7, group_id="g", session_timeout_ms=session_ms,
               rebalance_timeout_ms=10000, member_id="", group_instance_id=None,
               protocol_type="consumer",
               protocols=[cls.JoinGroupRequestProtocol(
                   name="range", metadata=encode_subscription(["orders"]))])
    return call(h, JOIN_GROUP, 7, body).error_code


def test_kafka_defaults_refuse_a_3_second_session(default: KafkaHandlers) -> None:
    assert join_code(default, 3000) == ErrorCode.INVALID_SESSION_TIMEOUT
    assert join_code(default, 6000) == ErrorCode.MEMBER_ID_REQUIRED
    assert join_code(default, 1800000) == ErrorCode.MEMBER_ID_REQUIRED
    assert join_code(default, 1800001) == ErrorCode.INVALID_SESSION_TIMEOUT


def test_configured_bounds_apply(low: KafkaHandlers) -> None:
    assert join_code(low, 999) == ErrorCode.INVALID_SESSION_TIMEOUT
    assert join_code(low, 1000) == ErrorCode.MEMBER_ID_REQUIRED
    assert join_code(low, 3000) == ErrorCode.MEMBER_ID_REQUIRED
    assert join_code(low, 5001) == ErrorCode.INVALID_SESSION_TIMEOUT


def test_bounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTBROKER_KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "250")
    monkeypatch.setenv("SMARTBROKER_KAFKA_GROUP_MAX_SESSION_TIMEOUT_MS", "60000")
    cfg = Config.load()
    assert (cfg.kafka_group_min_session_timeout_ms,
            cfg.kafka_group_max_session_timeout_ms) == (250, 60000)


def test_a_minimum_over_the_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="kafka_group_min_session_timeout_ms is over"):
        Config.load(kafka_group_min_session_timeout_ms=7000,
                    kafka_group_max_session_timeout_ms=6000)


def broker_configs(h: KafkaHandlers) -> dict[str, tuple[str, bool, bool]]:
    cls = codec.REQUESTS[32]
    body = cls(version=4, include_synonyms=False, include_documentation=False,
               resources=[cls.DescribeConfigsResource(resource_type=BROKER, resource_name="0",
                                                      configuration_keys=None)])
    [res] = call(h, 32, 4, body).results
    assert res.error_code == ErrorCode.NONE
    # v1+ has no is_default: config_source says it (5 DEFAULT_CONFIG, 4 STATIC_BROKER)
    return {c.name: (c.value, c.read_only, c.config_source == DEFAULT) for c in res.configs}


def test_describe_configs_shows_the_bounds(default: KafkaHandlers, low: KafkaHandlers) -> None:
    got = broker_configs(default)
    assert got["group.min.session.timeout.ms"] == ("6000", True, True)
    assert got["group.max.session.timeout.ms"] == ("1800000", True, True)
    got = broker_configs(low)
    assert got["group.min.session.timeout.ms"] == ("1000", True, False)
    assert got["group.max.session.timeout.ms"] == ("5000", True, False)


def test_listeners_plain_and_tls() -> None:
    [h] = handlers(kafka_port=19092, kafka_tls_port=19093, host="127.0.0.1")
    got = broker_configs(h)
    # advertised: the address this client reached (no kafka_advertised_host)
    assert got["advertised.listeners"][:2] == (
        "PLAINTEXT://10.1.2.3:19092,SSL://10.1.2.3:19093", True)
    assert got["listeners"][:2] == ("PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19093", True)


def test_listeners_advertised_host_and_all_interfaces() -> None:
    [h] = handlers(kafka_port=9092, kafka_advertised_host="kafka.example")
    got = broker_configs(h)
    assert got["advertised.listeners"][0] == "PLAINTEXT://kafka.example:9092"
    assert got["listeners"][0] == "PLAINTEXT://:9092"  # 0.0.0.0: Kafka's empty host
    [h] = handlers(kafka_port=9092, kafka_sasl_required=True)
    assert broker_configs(h)["advertised.listeners"][0] == "SASL_PLAINTEXT://10.1.2.3:9092"
