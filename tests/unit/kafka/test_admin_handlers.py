"""CreateTopics, DeleteTopics and DescribeConfigs against an in-memory broker, through the
sans-IO connection (encode and decode of every version), and the config <-> argument
mapping both ways."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec, configs, stored_configs
from smartbroker.kafka.admin import TOPIC
from smartbroker.kafka.handlers import KafkaHandlers, Node, Session
from tests.unit.kafka.kafka_fixtures import broker_with

SESSION = Session("127.0.0.1:50000", "127.0.0.1")
CREATE, DELETE, DESCRIBE = codec.REQUESTS[19], codec.REQUESTS[20], codec.REQUESTS[32]


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": {
        "x-queue-type": "stream", "x-partitions": 3, "x-max-age": "7D",
        "x-max-length-bytes": 1000000, "x-cleanup-policy": b"compact"}, "classic": None})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("h", 9092, Node.cluster_id_for("x"), "/"))


def roundtrip(h: KafkaHandlers, api_key: int, version: int, body: Any) -> Any:
    """The handler's answer, encoded and decoded at ``version`` as a client would read it."""
    request = codec.Request(codec.Header(api_key, version, 1, "c"), body)
    out = codec.encode_response(api_key, version, 1, h.handle(request, SESSION))
    return codec.response_class(api_key).decode(out[4:], version=version, header=True)


def create(h: KafkaHandlers, *topics: tuple[str, int, int, dict[str, str | None]],
           version: int = 7, validate_only: bool = False, assignments: Any = None) -> Any:
    t = CREATE.CreatableTopic
    body = CREATE(version=version, timeout_ms=1000, validate_only=validate_only, topics=[
        t(name=n, num_partitions=p, replication_factor=rf, assignments=assignments or [],
          configs=[t.CreatableTopicConfig(name=k, value=v) for k, v in cfg.items()])
        for n, p, rf, cfg in topics])
    return roundtrip(h, 19, version, body).topics


def test_create_makes_a_durable_stream_with_the_mapped_arguments(h: KafkaHandlers,
                                                                 broker: Broker) -> None:
    [r] = create(h, ("events", 4, -1, {"retention.ms": "3600000", "retention.bytes": "5000",
                                      "segment.bytes": "1048576",
                                      "cleanup.policy": "compact, delete",
                                      "delete.retention.ms": "90000"}))
    assert (r.error_code, r.error_message, r.num_partitions, r.replication_factor) == (0, None, 4, 1)
    assert r.topic_id == h.topic_id("events")
    q = broker.vhosts["/"].queues["events"]
    assert q.durable and q.capabilities.offset_log and len(q.logs) == 4
    assert q.arguments == {"x-queue-type": "stream", "x-partitions": 4, "x-max-age": "1h",
                           "x-max-length-bytes": 5000, "x-stream-max-segment-size-bytes": 1048576,
                           "x-cleanup-policy": "compact,delete", "x-delete-retention": "90s"}
    assert {c.name: (c.value, c.config_source) for c in r.configs  # stored_configs.py's
            if c.name not in stored_configs.STORED} == {  # (all default) aside
        "retention.ms": ("3600000", 1), "retention.bytes": ("5000", 1),
        "segment.bytes": ("1048576", 1), "cleanup.policy": ("compact,delete", 1),
        "delete.retention.ms": ("90000", 1), "max.message.bytes": ("134217728", 5),
        "compression.type": ("producer", 5), "message.format.version": ("3.0-IV1", 5)}
    assert h.topic("events") is not None


def test_create_defaults(h: KafkaHandlers, broker: Broker) -> None:
    [r] = create(h, ("plain", -1, 1, {"retention.ms": "-1", "retention.bytes": None}), version=2)
    assert r.error_code == 0
    assert broker.vhosts["/"].queues["plain"].arguments == {"x-queue-type": "stream",
                                                           "x-partitions": 1}


@pytest.mark.parametrize(("topic", "code"), [
    (("bad name", 1, 1, {}), 17), (("amq.x", 1, 1, {}), 17), (("orders", 1, 1, {}), 36),
    (("classic", 1, 1, {}), 36), (("t", 0, 1, {}), 37), (("t", -2, 1, {}), 37),
    (("t", 2000, 1, {}), 37), (("t", 1, 3, {}), 38), (("t", 1, 0, {}), 38),
    (("t", 1, 1, {"no.such": "1"}), 40), (("t", 1, 1, {"min.insync.replicas": "0"}), 40),
    (("t", 1, 1, {"retention.ms": "-2"}), 40), (("t", 1, 1, {"retention.ms": "x"}), 40),
    (("t", 1, 1, {"retention.bytes": "0"}), 40), (("t", 1, 1, {"cleanup.policy": "none"}), 40),
    (("t", 1, 1, {"segment.bytes": "10"}), 40), (("t", 1, 1, {"segment.bytes": "4000000000"}), 40),
])
def test_create_refusals(h: KafkaHandlers, broker: Broker, topic: Any, code: int) -> None:
    [r] = create(h, topic)
    assert r.error_code == code and r.error_message
    assert r.configs is None and r.num_partitions == -1
    assert "t" not in broker.vhosts["/"].queues
    assert broker.vhosts["/"].queues["classic"].capabilities.offset_log is False


def test_unsupported_config_names_itself(h: KafkaHandlers) -> None:
    [r] = create(h, ("t", 1, 1, {"remote.storage.enable": "true"}))
    assert "remote.storage.enable is not supported" in r.error_message


def test_create_validate_only_and_duplicates(h: KafkaHandlers, broker: Broker) -> None:
    [r] = create(h, ("t", 2, 1, {"retention.ms": "60000"}), validate_only=True)
    assert (r.error_code, r.num_partitions) == (0, 2)
    assert "t" not in broker.vhosts["/"].queues
    a, b = create(h, ("d", 1, 1, {}), ("d", 1, 1, {}))
    assert a.error_code == b.error_code == 42
    assert "d" not in broker.vhosts["/"].queues


def test_create_with_manual_assignment(h: KafkaHandlers, broker: Broker) -> None:
    a = CREATE.CreatableTopic.CreatableReplicaAssignment
    [r] = create(h, ("m", -1, -1, {}), assignments=[a(partition_index=i, broker_ids=[0])
                                                    for i in (1, 0)])
    assert (r.error_code, r.num_partitions) == (0, 2)
    [r] = create(h, ("n", -1, -1, {}), assignments=[a(partition_index=0, broker_ids=[0, 1])])
    assert r.error_code == 39
    [r] = create(h, ("n", 2, -1, {}), assignments=[a(partition_index=0, broker_ids=[0])])
    assert r.error_code == 42


def test_delete_by_name_and_by_id(h: KafkaHandlers, broker: Broker) -> None:
    create(h, ("gone", 1, 1, {}), ("gone2", 1, 1, {}))
    body = DELETE(version=5, timeout_ms=1000, topic_names=["gone", "nothing", "classic"])
    resp = roundtrip(h, 20, 5, body)
    assert [(r.name, r.error_code) for r in resp.responses] == [("gone", 0), ("nothing", 3),
                                                                 ("classic", 3)]
    assert "gone" not in broker.vhosts["/"].queues and "classic" in broker.vhosts["/"].queues
    state = DELETE.DeleteTopicState
    tid = h.topic_id("gone2")
    body = DELETE(version=6, timeout_ms=1000, topics=[state(name=None, topic_id=tid),
                                                      state(name=None, topic_id=uuid.uuid4())])
    resp = roundtrip(h, 20, 6, body)
    assert [(r.name, r.topic_id, r.error_code) for r in resp.responses][0] == ("gone2", tid, 0)
    assert resp.responses[1].error_code == 100
    assert "gone2" not in broker.vhosts["/"].queues


def describe(h: KafkaHandlers, resources: list[tuple[int, str, list[str] | None]],
             version: int = 4, synonyms: bool = False) -> Any:
    r = DESCRIBE.DescribeConfigsResource
    body = DESCRIBE(version=version, include_synonyms=synonyms, include_documentation=False,
                    resources=[r(resource_type=t, resource_name=n, configuration_keys=k)
                               for t, n, k in resources])
    return roundtrip(h, 32, version, body).results


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_describe_topic(h: KafkaHandlers, version: int) -> None:
    [res] = describe(h, [(TOPIC, "orders", None)], version)
    assert res.error_code == 0
    got = {c.name: (c.value, c.read_only) for c in res.configs
           if c.name not in stored_configs.STORED}  # all default (test_topic_configs_stored)
    assert got == {"retention.ms": ("604800000", False), "retention.bytes": ("1000000", False),
                   "segment.bytes": ("500000000", False), "cleanup.policy": ("compact", False),
                   "delete.retention.ms": ("86400000", False),
                   "max.message.bytes": ("134217728", False),
                   "compression.type": ("producer", False),
                   "message.format.version": ("3.0-IV1", False)}
    by_name = {c.name: c for c in res.configs}
    if version == 0:
        assert by_name["segment.bytes"].is_default and not by_name["retention.ms"].is_default
    else:
        assert by_name["segment.bytes"].config_source == configs.SOURCE_DEFAULT
        assert by_name["retention.ms"].config_source == configs.SOURCE_TOPIC
    if version >= 3:
        assert by_name["cleanup.policy"].config_type == configs.LIST


def test_describe_keys_unknown_topic_and_broker(h: KafkaHandlers) -> None:
    a, b, c, d, e = describe(h, [(TOPIC, "orders", ["retention.ms", "nope"]),
                                 (TOPIC, "missing", None), (TOPIC, "classic", None),
                                 (4, "0", None), (4, "7", None)])
    assert [x.name for x in a.configs] == ["retention.ms"]
    assert (b.error_code, c.error_code) == (3, 3)
    assert d.error_code == 0 and {x.name: x.value for x in d.configs}[
        "auto.create.topics.enable"] == "true"
    assert all(x.read_only for x in d.configs)
    assert e.error_code == 42


def test_age_strings_round_trip() -> None:
    assert configs.age_string(0) == "0s"
    assert configs.age_string(604800000) == "7D"
    assert configs.age_string(5400000) == "90m"
    assert configs.age_string(61000) == "61s"
    args = configs.to_arguments([("retention.ms", "172800000")])
    assert args == {"x-max-age": "2D"}
    assert configs.describe(args, ["retention.ms"])[0].value == "172800000"


def test_describe_synonyms_when_asked(h: KafkaHandlers) -> None:
    [res] = describe(h, [(TOPIC, "orders", ["retention.ms", "segment.bytes"])], synonyms=True)
    assert {c.name: [(s.name, s.value, s.source) for s in c.synonyms] for c in res.configs} == {
        "retention.ms": [("retention.ms", "604800000", configs.SOURCE_TOPIC)],
        "segment.bytes": [("segment.bytes", "500000000", configs.SOURCE_DEFAULT)]}
    [res] = describe(h, [(TOPIC, "orders", ["retention.ms"])])
    assert res.configs[0].synonyms == []


def test_config_values_kafka_accepts() -> None:
    assert configs.to_arguments([("cleanup.policy", "delete,compact"),
                                 ("retention.bytes", None), ("delete.retention.ms", "0")]) == {
        "x-cleanup-policy": "delete,compact", "x-delete-retention": "0s"}
    with pytest.raises(configs.ConfigError, match="at least 0"):
        configs.to_arguments([("delete.retention.ms", "-1")])
    described = {e.name: e for e in configs.describe({"x-delete-retention": "2h"})}
    assert described["delete.retention.ms"].value == "7200000"
    assert not described["delete.retention.ms"].is_default
    assert described["retention.ms"].is_default and described["retention.ms"].value == "-1"
