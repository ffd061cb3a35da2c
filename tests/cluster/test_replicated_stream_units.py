"""Replicated streams without nodes: the replica sets a placement gets, the log ids, and
``x-initial-cluster-size`` refused as RabbitMQ refuses it."""

from __future__ import annotations

import pytest

from smartbroker.cluster.partition_spread import spread
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.spread_replicas import (
    OFFSETS,
    cluster_size,
    log_id,
    members_after,
    replicate,
    replicated,
    with_leader,
)
from smartbroker.errors import AMQPError
from smartbroker.queues.stream_args import StreamSettings

UP = ["n1", "n2", "n3"]


def test_members_start_at_the_leader_and_go_round_the_nodes() -> None:
    assert members_after("n2", UP, 3) == ("n2", "n3", "n1")
    assert members_after("n3", UP, 2) == ("n3", "n1")
    assert members_after("n1", UP, 5) == ("n1", "n2", "n3")  # capped at the nodes up


def test_one_partition_gets_partitions_and_partition_members() -> None:
    placed = replicate(Placement("n2"), 1, 3, UP)
    assert placed.partitions == ("n2",)
    assert placed.partition_members == (("n2", "n3", "n1"),)
    assert placed.members == ()
    assert replicated(placed) and spread(placed)
    assert Placement.decode(placed.encode()) == placed


def test_spread_partitions_each_get_their_own_set() -> None:
    placed = replicate(Placement("n1", ("n1", "n2", "n3")), 3, 2, UP)
    assert placed.partition_members == (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))


def test_size_one_or_a_lone_node_changes_nothing() -> None:
    assert replicate(Placement("n1"), 1, 1, UP) == Placement("n1")
    assert replicate(Placement("n1"), 1, 3, ["n1"]) == Placement("n1")
    assert not replicated(Placement("n1")) and not spread(Placement("n1"))


def test_cluster_size_reads_the_argument() -> None:
    assert cluster_size({}) == 1
    assert cluster_size({"x-initial-cluster-size": 3}) == 3
    assert cluster_size({"x-initial-cluster-size": True}) == 1


def test_log_ids_and_leader_changes() -> None:
    assert log_id("/", "a b", 2) == "%2F/a%20b/2"
    assert log_id("v", "s", OFFSETS) == "v/s"  # the group offsets: the stream's own id
    placed = Placement("n1", ("n1", "n2"), partition_members=(("n1", "n2"), ("n2", "n1")))
    assert with_leader(placed, 1, "n1").partitions == ("n1", "n1")
    assert with_leader(placed, OFFSETS, "n2").leader == "n2"


def _parse(value: object) -> StreamSettings:
    return StreamSettings.parse("s", "/", True, False, False, {"x-initial-cluster-size": value})


@pytest.mark.parametrize(("value", "why"), [
    (0, "{value_zero,0}"), (-2, "{value_negative,-2}"),
    ("3", '"expected integer, got longstr"')])
def test_initial_cluster_size_refused_as_rabbitmq_does(value: object, why: str) -> None:
    with pytest.raises(AMQPError) as caught:
        _parse(value)
    assert caught.value.code == 406
    assert caught.value.text == ("invalid arg 'x-initial-cluster-size' "
                                 f"for queue 's' in vhost '/': {why}")


def test_initial_cluster_size_accepted() -> None:
    assert _parse(3).partitions == 1
