"""ApiVersions and Metadata against a real (in-memory) broker: stream queues are topics,
classic queues are not, names Kafka forbids are INVALID_TOPIC_EXCEPTION."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node, valid_topic_name
from smartbroker.kafka.protocol import KafkaConnection, KafkaProtocolError
from tests.unit.kafka.kafka_fixtures import ONE_PARTITION, SESSION, THREE_PARTITIONS, broker_with


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS, "single": ONE_PARTITION, "classic": None,
                           "bad name": ONE_PARTITION})


def handlers(broker: Broker, host: str | None = "kafka.example", vhost: str = "/") -> KafkaHandlers:
    return KafkaHandlers(broker, Node(host, 19092, Node.cluster_id_for("x"), vhost))


def ask(h: KafkaHandlers, api_key: int, version: int, body: bytes) -> object:
    """Through the sans-IO connection, as the listener does; the response decoded back."""
    conn = KafkaConnection(SUPPORTED)
    payload = struct.pack(">hhih", api_key, version, 1, 1) + b"c"
    if codec.is_flexible(api_key, version):
        payload += b"\x00"
    payload += body
    conn.receive_data(struct.pack(">i", len(payload)) + payload)
    request = conn.next_request()
    out = conn.send_response(request, h.handle(request, SESSION))
    return codec.response_class(api_key).decode(out[4:], version=version, header=True)


def metadata_v1(*names: str) -> bytes:
    return struct.pack(">i", len(names)) + b"".join(
        struct.pack(">h", len(n.encode())) + n.encode() for n in names)


def test_api_versions_advertises_exactly_the_handlers(broker: Broker) -> None:
    resp = ask(handlers(broker), 18, 0, b"")
    assert resp.error_code == 0
    advertised = {(k.api_key, k.min_version, k.max_version) for k in resp.api_keys}
    assert advertised == {(key, lo, hi) for key, (lo, hi) in SUPPORTED.items()}
    assert set(handlers(broker).table) == set(SUPPORTED)
    # a sample of what KAFKA.md asks for, so that a shrinking SUPPORTED is noticed
    assert {(18, 0, 4), (3, 0, 12), (1, 4, 16), (0, 3, 10), (2, 1, 7), (19, 2, 7), (20, 1, 6),
            (32, 0, 4), (10, 0, 4), (8, 2, 8), (9, 1, 8), (17, 0, 1), (36, 0, 2),
            (37, 0, 3), (21, 0, 2), (33, 0, 2), (44, 0, 1), (60, 0, 2)} <= advertised


def test_api_versions_v3(broker: Broker) -> None:
    resp = ask(handlers(broker), 18, 3, b"\x02c\x021\x00")
    assert {k.api_key for k in resp.api_keys} == set(SUPPORTED)


def test_metadata_all_topics_are_the_streams(broker: Broker) -> None:
    resp = ask(handlers(broker), 3, 1, struct.pack(">i", -1))
    assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [(0, "kafka.example", 19092)]
    assert resp.controller_id == 0
    topics = {t.name: t for t in resp.topics}
    assert set(topics) == {"orders", "single"}  # no classic queue, no unnameable stream
    parts = topics["orders"].partitions
    assert [p.partition_index for p in parts] == [0, 1, 2]
    assert all((p.leader_id, p.replica_nodes, p.isr_nodes) == (0, [0], [0]) for p in parts)


def test_metadata_v0_empty_list_means_all(broker: Broker) -> None:
    resp = ask(handlers(broker), 3, 0, struct.pack(">i", 0))
    assert {t.name for t in resp.topics} == {"orders", "single"}


def test_metadata_v1_empty_list_means_none(broker: Broker) -> None:
    assert ask(handlers(broker), 3, 1, struct.pack(">i", 0)).topics == []


def test_metadata_errors_per_topic(broker: Broker) -> None:
    broker.config.kafka_auto_create_topics = False  # Metadata v1 would create "nope"
    resp = ask(handlers(broker), 3, 1, metadata_v1("orders", "classic", "nope", "bad name",
                                                   "a" * 250, ".."))
    assert [(t.name, t.error_code, len(t.partitions)) for t in resp.topics] == [
        ("orders", 0, 3), ("classic", 3, 0), ("nope", 3, 0), ("bad name", 17, 0),
        ("a" * 250, 17, 0), ("..", 17, 0)]


def test_metadata_v12_ids_and_epochs(broker: Broker) -> None:
    # topics null (compact: 0), allow_auto_topic_creation, include_topic_authorized_ops, tags
    resp = ask(handlers(broker), 3, 12, b"\x00" + b"\x01\x00\x00")
    assert {t.name for t in resp.topics} == {"orders", "single"}
    orders = next(t for t in resp.topics if t.name == "orders")
    assert orders.topic_id != uuid.UUID(int=0)
    assert {p.leader_epoch for p in orders.partitions} == {-1}
    assert len(resp.cluster_id) == 22
    # the same topic by id (v10+): name null, the id given
    by_id = b"\x02" + orders.topic_id.bytes + b"\x00" + b"\x00" + b"\x01\x00\x00"
    resp = ask(handlers(broker), 3, 12, by_id)
    assert [(t.name, t.error_code) for t in resp.topics] == [("orders", 0)]
    unknown = b"\x02" + uuid.uuid4().bytes + b"\x00" + b"\x00" + b"\x01\x00\x00"
    assert [t.error_code for t in ask(handlers(broker), 3, 12, unknown).topics] == [100]


def test_metadata_v11_by_topic_id_is_refused(broker: Broker) -> None:
    by_id = b"\x02" + uuid.uuid4().bytes + b"\x00" + b"\x00" + b"\x01\x00\x00"
    with pytest.raises(KafkaProtocolError, match="null topic name"):
        ask(handlers(broker), 3, 11, by_id)


def test_advertised_host_defaults_to_the_address_connected_to(broker: Broker) -> None:
    resp = ask(handlers(broker, host=None), 3, 1, struct.pack(">i", 0))
    assert resp.brokers[0].host == "127.0.0.1"


def test_other_vhost_or_missing_vhost(broker: Broker) -> None:
    assert ask(handlers(broker, vhost="/other"), 3, 1, struct.pack(">i", -1)).topics == []


@pytest.mark.parametrize("name, ok", [
    ("a", True), ("A.b_c-9", True), ("a" * 249, True), ("a" * 250, False), ("", False),
    (".", False), ("..", False), ("...", True), ("a b", False), ("a/b", False), ("é", False)])
def test_valid_topic_name(name: str, ok: bool) -> None:
    assert valid_topic_name(name) is ok
