"""The records a stream declared without replicas gets when it gains its first one
(``cluster/stream_members.py``), on a real etcd without broker nodes, and where this
node reads its partitions from then on (``replication/stream_limits.py``).

- the first change writes partition 0's and the group offsets' ISR records (the owner
  alone in sync), ``partitions`` and ``partition_members`` in one transaction; a
  stale ISR record and leader key of a deleted namesake are overwritten and deleted;
- a placement changed meanwhile fails the transaction (nothing written);
- another partition than 0 first is refused; a later partition's record is created
  by its own first change;
- read limits: what this node served stays readable, a partition of one replica is
  read freely on its node only.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from smartbroker.cluster import definitions_keys as dk
from smartbroker.cluster.etcd_client import EtcdClient, Put
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.replication import stream_limits
from smartbroker.cluster.replication.records import ISR, LEADER
from smartbroker.cluster.stream_members import ReplicaError, read_stream, set_members
from smartbroker.launcher import free_port
from smartbroker.queues.stream_replicated import NO_LIMIT

STREAM = "first-rec"


async def _declared(etcd: Any, placement: dict[str, Any]) -> None:
    key = dk.ROOT + b"queues/" + dk.seg("/") + b"/" + dk.seg(STREAM)
    await etcd.commit([Put(key, json.dumps({"type": "stream"}).encode()),
                       Put(f"placement/%2F/{STREAM}", json.dumps(placement).encode()),
                       Put("nodes/n1", b"{}"), Put("nodes/n2", b"{}"), Put("nodes/n3", b"{}")])


async def _json(etcd: Any, key: str) -> Any:
    found = await etcd.get(key)
    return None if found is None else json.loads(found.value)


def test_the_first_replica_writes_the_records_in_one_transaction(etcd: Any) -> None:
    async def run() -> None:
        async with EtcdClient(etcd.endpoint, f"first-{free_port()}") as client:
            await _declared(client, {"leader": "n1", "partitions": ["n1", "n2", "n3"]})
            # a deleted namesake's records, left behind
            await client.put(ISR + "%2F/first-rec/0", b'{"members":["n2","n3"],"isr":["n2"]}')
            await client.put(LEADER + "%2F/first-rec/0", b'{"node":"n2"}')
            state = await read_stream(client, "/", STREAM)
            assert state.unreplicated and state.partition_members == [["n1"], ["n2"], ["n3"]]
            assert state.partition(0).isr == ["n1"] and state.partition(0).leader is None
            with pytest.raises(ReplicaError, match="add one to partition 0 first"):
                state.affected(2)

            stale = await read_stream(client, "/", STREAM)
            await client.put(f"placement/%2F/{STREAM}", json.dumps(  # changed meanwhile
                {"leader": "n1", "partitions": ["n1", "n2", "n3"]}).encode())
            assert await set_members(client, stale, 0, ["n1", "n2"]) is None
            assert await _json(client, ISR + "%2F/first-rec") is None  # nothing written

            state = await read_stream(client, "/", STREAM)
            assert await set_members(client, state, 0, ["n1", "n2"]) is not None
            placement = await _json(client, f"placement/%2F/{STREAM}")
            assert placement == {"leader": "n1", "partitions": ["n1", "n2", "n3"],
                                 "partition_members": [["n1", "n2"], ["n2"], ["n3"]]}
            for log_id in ("%2F/first-rec/0", "%2F/first-rec"):  # partition 0, group offsets
                assert await _json(client, ISR + log_id) == {
                    "members": ["n1", "n2"], "isr": ["n1"], "epoch": 0}
            assert await client.get(LEADER + "%2F/first-rec/0") is None  # the stale key went

            later = await read_stream(client, "/", STREAM)
            assert not later.unreplicated and later.partition(2).members == ["n3"]
            assert await set_members(client, later, 2, ["n3", "n1"]) is not None
            assert await _json(client, ISR + "%2F/first-rec/2") == {
                "members": ["n3", "n1"], "isr": ["n3"], "epoch": 0}
            assert (await read_stream(client, "/", STREAM)).partition_members == [
                ["n1", "n2"], ["n2"], ["n3", "n1"]]
    asyncio.run(run())


class _Log:
    def __init__(self, end: int) -> None:
        self.next_offset = end


def test_read_limits_follow_the_replica_sets() -> None:
    stream = SimpleNamespace(logs=[_Log(50), _Log(0), _Log(7)], limits=None, readers={},
                             dispatch=lambda: None)
    placement = Placement("n1", ("n1", "n2", "n1"), (), (("n1", "n2"), ("n2",), ("n1",)))
    assert stream_limits.initial(stream, placement, "n1", served=True) == [50, 0, NO_LIMIT]
    assert stream_limits.initial(stream, placement, "n1", served=False) == [0, 0, NO_LIMIT]
    assert stream_limits.initial(stream, placement, "n2", served=False) == [0, NO_LIMIT, 0]
    stream.limits = [50, 0, NO_LIMIT]
    stream.logs[2].next_offset = 9
    grown = Placement("n1", ("n1", "n2", "n1"), (), (("n1", "n2"), ("n2",), ("n1", "n3")))
    stream_limits.follow(stream, grown, "n1", {0: object()})
    assert stream.limits == [50, 0, 9]  # what it served freely stays readable
