"""ListGroups, DescribeGroups, DeleteGroups and OffsetDelete against an in-memory broker,
over the three kinds of group: Kafka members (a fake coordinator in G1's model's shape),
AMQP x-consumer-group members, and groups known only by committed offsets."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.kafka import codec
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.group_admin import DELETE_GROUPS, DESCRIBE_GROUPS, LIST_GROUPS, OFFSET_DELETE
from smartbroker.kafka.group_view import (
    amqp_holder,
    assignment_bytes,
    group_watcher,
    link_streams,
    subscription_bytes,
)
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node
from smartbroker.queues.groups import GroupActive
from smartbroker.queues.offsets import OffsetReset
from tests.unit.kafka.kafka_fixtures import ONE_PARTITION, SESSION, THREE_PARTITIONS, broker_with


@dataclass
class FakeMember:
    member_id: str
    group_instance_id: str | None = None
    client_id: str = "rdkafka"
    client_host: str = "/127.0.0.1"
    protocols: list[tuple[str, bytes]] = field(default_factory=list)
    assignment: bytes = b""


@dataclass
class FakeGroup:
    group_id: str
    state: str = "Stable"
    protocol_type: str | None = "consumer"
    protocol_name: str | None = "range"
    members: dict[str, FakeMember] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)
    assigned_to: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def topics(self) -> set[str]:
        return self.subscribed

    def assigned(self) -> dict[str, dict[str, list[int]]]:
        return self.assigned_to


class FakeCoordinator:
    def __init__(self) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.watchers: list[Any] = []

    def group(self, group_id: str) -> FakeGroup | None:
        return self.groups.get(group_id)

    def remove(self, group_id: str) -> None:
        self.groups.pop(group_id, None)


class Consumer:
    """An AMQP consumer of the stream in group ``group`` (what a queue needs of one)."""

    def __init__(self, tag: str, group: str) -> None:
        self.tag, self.no_ack, self.exclusive, self.priority = tag, False, False, 0
        self.parked, self.unacked = False, 0
        self.arguments = {"x-consumer-group": group, "x-stream-offset": "first"}

    def can_take(self) -> bool:
        return False

    def deliver(self, queue: Any, entry: Any) -> None:
        raise AssertionError("no credit")

    def cancelled_by_broker(self) -> None:
        pass


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS, "single": ONE_PARTITION})


@pytest.fixture
def coordinator() -> FakeCoordinator:
    return FakeCoordinator()


@pytest.fixture
def h(broker: Broker, coordinator: FakeCoordinator) -> KafkaHandlers:
    handlers = KafkaHandlers(broker, Node(None, 19092, Node.cluster_id_for("x"), "/"))
    handlers.coordinator = coordinator  # type: ignore[assignment]
    return handlers


def stream(broker: Broker, name: str) -> Any:
    return broker.vhosts["/"].queues[name]


def call(h: KafkaHandlers, api_key: int, version: int, **fields: Any) -> Any:
    body = codec.REQUESTS[api_key](version=version, **fields)
    resp = h.handle(Request(Header(api_key, version, 7, "t"), body), SESSION)
    wire = codec.encode_response(api_key, version, 7, resp)
    return codec.response_class(api_key).decode(wire[4:], version=version, header=True)


def listed(h: KafkaHandlers, version: int = 4, states: list[str] | None = None,
           **extra: Any) -> dict[str, tuple[str, str]]:
    fields: dict[str, Any] = {"states_filter": states or []} if version >= 4 else {}
    resp = call(h, LIST_GROUPS, version, **fields, **extra)
    assert resp.error_code == 0
    return {g.group_id: (g.protocol_type, g.group_state if version >= 4 else "")
            for g in resp.groups}


def described(h: KafkaHandlers, *groups: str, version: int = 5) -> dict[str, Any]:
    resp = call(h, DESCRIBE_GROUPS, version, groups=list(groups),
                include_authorized_operations=False)
    return {g.group_id: g for g in resp.groups}


def kafka_group(coordinator: FakeCoordinator, broker: Broker, h: KafkaHandlers,
                name: str = "kg") -> FakeGroup:
    """A Stable Kafka group of two members subscribed to orders (m-1: 0 and 2, m-2: 1)."""
    sub = subscription_bytes(["orders"])
    group = FakeGroup(name, members={
        "m-1": FakeMember("m-1", "i-1", protocols=[("range", sub)],
                          assignment=assignment_bytes({"orders": [0, 2]})),
        "m-2": FakeMember("m-2", protocols=[("range", sub)],
                          assignment=assignment_bytes({"orders": [1]}))},
        subscribed={"orders"}, assigned_to={"m-1": {"orders": [0, 2]}, "m-2": {"orders": [1]}})
    coordinator.groups[name] = group
    link_streams(h.streams, lambda: coordinator, name, group.topics())
    return group


def test_advertised() -> None:
    assert SUPPORTED[LIST_GROUPS] == (0, 5) and SUPPORTED[DESCRIBE_GROUPS] == (0, 5)
    assert SUPPORTED[DELETE_GROUPS] == (0, 2) and SUPPORTED[OFFSET_DELETE] == (0, 0)


def test_list_groups_of_all_three_kinds(h: KafkaHandlers, broker: Broker,
                                        coordinator: FakeCoordinator) -> None:
    kafka_group(coordinator, broker, h)
    stream(broker, "orders").add_consumer(Consumer("amq.ctag-1", "ag"))
    stream(broker, "single").groups.commit("og", 0, 3)
    assert listed(h) == {"kg": ("consumer", "Stable"), "ag": ("consumer", "Stable"),
                         "og": ("", "Empty")}
    assert listed(h, version=0) == {"kg": ("consumer", ""), "ag": ("consumer", ""),
                                    "og": ("", "")}
    assert listed(h, states=["Empty"]) == {"og": ("", "Empty")}
    assert set(listed(h, states=["stable", "PreparingRebalance"])) == {"kg", "ag"}
    assert set(listed(h, version=5, types_filter=["classic"])) == {"kg", "ag", "og"}
    assert listed(h, version=5, types_filter=["consumer"]) == {}


def test_describe_kafka_group(h: KafkaHandlers, broker: Broker,
                              coordinator: FakeCoordinator) -> None:
    kafka_group(coordinator, broker, h)
    g = described(h, "kg")["kg"]
    assert (g.error_code, g.group_state, g.protocol_type, g.protocol_data) == (
        0, "Stable", "consumer", "range")
    members = {m.member_id: m for m in g.members}
    assert set(members) == {"m-1", "m-2"}
    assert members["m-1"].group_instance_id == "i-1"
    assert members["m-1"].client_host == "/127.0.0.1"
    assert members["m-1"].member_assignment == assignment_bytes({"orders": [0, 2]})
    coordinator.groups["kg"].state = "PreparingRebalance"  # metadata only while Stable
    g = described(h, "kg")["kg"]
    assert g.protocol_data == "" and all(m.member_assignment == b"" for m in g.members)


def test_describe_amqp_group_in_the_consumer_protocol(h: KafkaHandlers, broker: Broker) -> None:
    stream(broker, "orders").add_consumer(Consumer("amq.ctag-1", "ag"))
    stream(broker, "orders").add_consumer(Consumer("amq.ctag-2", "ag"))
    g = described(h, "ag")["ag"]
    assert (g.group_state, g.protocol_type, g.protocol_data) == (
        "Stable", "consumer", "amqp-cooperative")
    by_id = {m.member_id: m for m in g.members}
    assert set(by_id) == {"amq.ctag-1", "amq.ctag-2"}
    assert by_id["amq.ctag-1"].member_metadata == subscription_bytes(["orders"])
    owned = []
    for m in g.members:
        raw = m.member_assignment
        version, topics, length = struct.unpack_from(">hih", raw)
        assert (version, topics, raw[8:8 + length]) == (0, 1, b"orders")
        (count,) = struct.unpack_from(">i", raw, 8 + length)
        owned += struct.unpack_from(f">{count}i", raw, 12 + length)
    assert sorted(owned) == [0, 1, 2]


def test_describe_unknown_offsets_only_and_invalid(h: KafkaHandlers, broker: Broker) -> None:
    stream(broker, "single").groups.commit("og", 0, 3)
    got = described(h, "og", "nope", "")
    assert (got["og"].group_state, got["og"].protocol_type, got["og"].members) == (
        "Empty", "", [])
    assert (got["nope"].error_code, got["nope"].group_state) == (0, "Dead")
    assert (got[""].error_code, got[""].group_state) == (0, "Dead")


def test_external_members_seen_by_the_stream_api(h: KafkaHandlers, broker: Broker,
                                                 coordinator: FakeCoordinator) -> None:
    kafka_group(coordinator, broker, h)
    groups = stream(broker, "orders").groups
    info = groups.describe("kg")
    assert info.active and info.protocol == "kafka"
    assert [p.owner for p in info.partitions] == ["m-1", "m-2", "m-1"]
    assert {m.client_host for m in info.members} == {"/127.0.0.1"}
    with pytest.raises(GroupActive):
        groups.reset("kg", OffsetReset("earliest"))
    coordinator.groups["kg"].members.clear()
    coordinator.groups["kg"].state = "Empty"
    assert "kg" not in groups  # no members, no offsets on this stream
    groups.commit("kg", 0, 0)
    assert not groups.describe("kg").active
    assert groups.reset("kg", OffsetReset("earliest"))


def delete(h: KafkaHandlers, *names: str, version: int = 2) -> dict[str, int]:
    resp = call(h, DELETE_GROUPS, version, groups_names=list(names))
    return {r.group_id: r.error_code for r in resp.results}


def test_delete_groups(h: KafkaHandlers, broker: Broker, coordinator: FakeCoordinator) -> None:
    kafka_group(coordinator, broker, h)
    stream(broker, "orders").add_consumer(Consumer("amq.ctag-1", "ag"))
    stream(broker, "orders").groups.commit("og", 1, 5)
    stream(broker, "single").groups.commit("og", 0, 3)
    coordinator.groups["eg"] = FakeGroup("eg", state="Empty", protocol_name=None)
    assert delete(h, "kg", "ag", "og", "eg", "nope") == {
        "kg": 68, "ag": 68, "og": 0, "eg": 0, "nope": 69}
    assert "og" not in stream(broker, "orders").groups
    assert "og" not in stream(broker, "single").groups
    assert "eg" not in coordinator.groups and "kg" in coordinator.groups
    assert delete(h, "og", version=0) == {"og": 69}


def offset_delete(h: KafkaHandlers, group: str, topics: dict[str, list[int]]) -> Any:
    cls = codec.REQUESTS[OFFSET_DELETE]
    topic_cls = cls.OffsetDeleteRequestTopic
    return call(h, OFFSET_DELETE, 0, group_id=group, topics=[
        topic_cls(name=t, partitions=[topic_cls.OffsetDeleteRequestPartition(partition_index=p)
                                      for p in ps]) for t, ps in topics.items()])


def codes(resp: Any) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def test_offset_delete(h: KafkaHandlers, broker: Broker, coordinator: FakeCoordinator) -> None:
    kafka_group(coordinator, broker, h)
    stream(broker, "single").groups.commit("kg", 0, 4)
    stream(broker, "orders").groups.commit("kg", 0, 1)
    resp = offset_delete(h, "kg", {"orders": [0], "single": [0, 5], "missing": [0]})
    assert resp.error_code == 0
    assert codes(resp) == {("orders", 0): 86, ("single", 0): 0, ("single", 5): 3,
                           ("missing", 0): 3}
    assert stream(broker, "single").groups.book.get("kg", 0) is None
    assert stream(broker, "orders").groups.book.get("kg", 0) == 1

    stream(broker, "orders").add_consumer(Consumer("amq.ctag-1", "ag"))
    assert codes(offset_delete(h, "ag", {"orders": [0]})) == {("orders", 0): 86}
    unknown = offset_delete(h, "nope", {"orders": [0]})
    assert (unknown.error_code, unknown.topics) == (69, [])


def test_refused_without_read_in_the_vhost(h: KafkaHandlers, broker: Broker) -> None:
    stream(broker, "single").groups.commit("og", 0, 3)
    broker.permissions.set(Permission(broker.config.default_user, "/", read="^$"))
    assert listed(h) == {}
    assert described(h, "og")["og"].error_code == 30
    assert delete(h, "og") == {"og": 30}
    assert offset_delete(h, "og", {"single": [0]}).error_code == 30
    assert stream(broker, "single").groups.book.get("og", 0) == 3


def test_group_watcher_links_and_unlinks_streams(h: KafkaHandlers, broker: Broker,
                                                 coordinator: FakeCoordinator) -> None:
    changed = group_watcher(h.streams, lambda: coordinator)
    group = FakeGroup("w", members={"m-1": FakeMember("m-1")}, subscribed={"orders"},
                      assigned_to={"m-1": {"orders": [0, 1, 2]}})
    coordinator.groups["w"] = group
    stream(broker, "single").groups.commit("w", 0, 2)  # offsets elsewhere: linked too
    link_streams(h.streams, lambda: coordinator, "w", group.topics())  # G1's watcher
    changed(group)
    assert stream(broker, "orders").groups.describe("w").protocol == "kafka"
    single = stream(broker, "single").groups.describe("w")
    assert single.active and single.members[0].partitions == ()
    group.state = "Dead"
    coordinator.groups.pop("w")
    changed(group)
    assert stream(broker, "orders").groups.external == {}
    assert not stream(broker, "single").groups.describe("w").active


def test_amqp_holder_names_the_stream_of_amqp_members(h: KafkaHandlers, broker: Broker) -> None:
    assert amqp_holder(h.streams, "ag") is None
    stream(broker, "single").add_consumer(Consumer("amq.ctag-1", "ag"))
    assert amqp_holder(h.streams, "ag") == "single"
    assert amqp_holder(h.streams, "other") is None


@pytest.mark.parametrize("version", range(6))
def test_every_advertised_version_encodes(h: KafkaHandlers, broker: Broker,
                                          coordinator: FakeCoordinator, version: int) -> None:
    kafka_group(coordinator, broker, h)
    stream(broker, "single").groups.commit("og", 0, 3)
    assert set(listed(h, version=version)) == {"kg", "og"}
    got = described(h, "kg", "og", version=version)
    assert {m.member_id for m in got["kg"].members} == {"m-1", "m-2"}
    assert (got["og"].group_state, got["og"].members) == ("Empty", [])
    if version <= 2:
        assert delete(h, "og", "kg", version=version) == {"og": 0, "kg": 68}


def test_odd_input_is_answered_not_raised(h: KafkaHandlers, broker: Broker) -> None:
    stream(broker, "single").groups.commit("og", 0, 3)
    assert described(h, "a\x00b")["a\x00b"].group_state == "Dead"
    assert delete(h, "", "a\x00b") == {"": 69, "a\x00b": 69}
    assert offset_delete(h, "", {"single": [0]}).error_code == 69
    assert codes(offset_delete(h, "og", {"single": [-1, 2**31 - 1], "no such topic": [0]})) == {
        ("single", -1): 3, ("single", 2**31 - 1): 3, ("no such topic", 0): 3}
    assert stream(broker, "single").groups.book.get("og", 0) == 3
