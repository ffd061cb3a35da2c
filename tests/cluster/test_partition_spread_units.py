"""partition_spread and partition_bounds without a cluster: which placements spread, who
leads a partition, a relay parking its consumer, the bounds a leader learns and what its
group views and management API make of them, and the bounds call's answers to bad input."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.partition_bounds import answer
from smartbroker.cluster.partition_spread import (
    PartitionRelay,
    PartitionSpread,
    RemotePartition,
    owner,
    spread,
)
from smartbroker.cluster.placement import Placement
from smartbroker.queues.base import QueueSpec
from smartbroker.queues.groups import GroupError
from smartbroker.queues.stream import StreamQueue

SPREAD = Placement("n1", ("n1", "n2", "n3"))


def test_only_partitions_on_several_nodes_spread() -> None:
    assert spread(SPREAD)
    assert not spread(None)
    assert not spread(Placement("n1"))
    assert not spread(Placement("n1", ("n1", "n1")))  # placed while it was alone


def test_the_owner_of_a_partition_added_later_is_the_stream_leader() -> None:
    assert [owner(SPREAD, i) for i in range(5)] == ["n1", "n2", "n3", "n1", "n1"]
    assert owner(SPREAD, -1) == "n1"


def test_a_relay_left_without_credit_parks_its_consumer() -> None:
    channel = SimpleNamespace()
    origin = ChannelConsumer(channel, None, "ctag", no_ack=False,  # type: ignore[arg-type]
                             exclusive=False, prefetch=5)
    relay = PartitionRelay(origin, None, None)  # type: ignore[arg-type]
    assert (relay.tag, relay.prefetch, relay.parked, origin.parked) == ("ctag", 5, False, False)
    relay.parked = True
    assert origin.parked
    relay.parked = False  # the origin stays parked until its channel wakes it
    assert origin.parked and not relay.parked


def spread_stream(node: str = "n1") -> PartitionSpread:
    stream = StreamQueue.declare(QueueSpec("s", "/", True, False, False,
                                           {"x-queue-type": "stream", "x-partitions": 3},
                                           None, None), host=None)  # type: ignore[arg-type]
    forwarding = SimpleNamespace(node=node)
    return PartitionSpread(stream, forwarding, SPREAD)  # type: ignore[arg-type]


def test_the_leader_learns_the_other_nodes_bounds_and_shows_them() -> None:
    s = spread_stream()
    s.learn("n2", [[0, 0], [3, 10], [0, 0]])  # n2's copy: only its partition 1 counts
    s.learn("n3", [[9, 9], [9, 9], "garbage"])  # never a traceback on bad data
    s.learn("n1", [[5, 6], [5, 6], [5, 6]])  # its own partitions are its logs
    assert s.bounds == {1: (3, 10)}
    views = s.group_views()
    assert views[0] is s.stream.logs[0]
    assert isinstance(views[1], RemotePartition)
    assert (views[1].first_offset, views[1].next_offset) == (3, 10)
    assert (views[2].first_offset, views[2].next_offset) == (0, 0)  # not told yet
    with pytest.raises(GroupError, match="another node"):
        views[1].offset_for_timestamp(0)
    parts: list[dict[str, Any]] = [{"partition": i, "messages": 0, "first_offset": 0,
                                    "next_offset": 0, "last_offset": None} for i in range(3)]
    s.describe(parts)
    assert [p["leader"] for p in parts] == ["n1", "n2", "n3"]
    assert (parts[1]["messages"], parts[1]["last_offset"]) == (7, 9)
    assert parts[2]["messages"] == 0


def test_the_bounds_call_answers_spread_streams_only() -> None:
    s = spread_stream("n2")
    s.stream.spread = s  # as partition_spread.attach leaves it
    plain = StreamQueue("p", "/")
    handler = answer({"/": SimpleNamespace(queues={"s": s.stream, "p": plain})})
    reply = wire.decode(handler("n1", wire.encode({"streams": [
        ["/", "s"], ["/", "p"], ["/", "gone"], ["nope", "s"], "junk", [1]]})))
    assert reply == {"code": 0, "streams": [["/", "s", [[0, 0], [0, 0], [0, 0]]]]}
    assert wire.decode(handler("n1", b"\xff not a payload"))["code"] == 406
