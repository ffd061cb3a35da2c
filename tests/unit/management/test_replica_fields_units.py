"""management/replicas.py with the node's watched copies as plain objects: ``online``
leaves out members whose lease is gone, a stream's members are every node holding a
partition, and one node (no cluster) is leader, member and online."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from smartbroker.cluster.placement import Placement, PlacementTable
from smartbroker.management.replicas import describe_partitions, replica_fields


def state(placements: dict[str, Placement] | None, up: set[str]) -> Any:
    """A ManagementState's node name and cluster (None: a single node)."""
    if placements is None:
        return SimpleNamespace(node="solo", cluster=None)
    table = PlacementTable("n1")
    table.queues.update({("/", name): p for name, p in placements.items()})
    cluster = SimpleNamespace(forwarding=SimpleNamespace(placement=table),
                              membership=SimpleNamespace(is_up=lambda n: n in up))
    return SimpleNamespace(node="n1", cluster=cluster)


def queue(name: str, leader: str | None = None) -> Any:
    return SimpleNamespace(vhost="/", name=name, leader=leader)


def test_online_is_the_members_up() -> None:
    st = state({"q": Placement("n2", members=("n2", "n3", "n1"))}, up={"n1", "n2"})
    assert replica_fields(queue("q", "n2"), st) == {
        "leader": "n2", "members": ["n2", "n3", "n1"], "online": ["n2", "n1"]}


def test_unreplicated_and_single_node() -> None:
    st = state({"q": Placement("n2")}, up={"n1", "n2"})
    assert replica_fields(queue("q", "n2"), st) == {
        "leader": "n2", "members": ["n2"], "online": ["n2"]}
    assert replica_fields(queue("q"), state(None, set())) == {
        "leader": "solo", "members": ["solo"], "online": ["solo"]}


def test_stream_partitions() -> None:
    placement = Placement("n1", ("n1", "n2"), partition_members=(("n1", "n2"), ("n2", "n3")))
    st = state({"s": placement}, up={"n1", "n2"})
    assert replica_fields(queue("s", "n1"), st)["members"] == ["n1", "n2", "n3"]
    parts: list[dict[str, Any]] = [{"partition": 0}, {"partition": 1}, {"partition": "x"}]
    describe_partitions(queue("s"), st, parts)
    assert parts == [{"partition": 0, "members": ["n1", "n2"], "online": ["n1", "n2"]},
                     {"partition": 1, "members": ["n2", "n3"], "online": ["n2"]},
                     {"partition": "x"}]
