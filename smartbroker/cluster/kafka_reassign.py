"""Kafka's partition reassignments on a cluster (``kafka/reassignments.Reassigner``), as
Kafka's controller carries them out (KIP-455), on the replica records in etcd
(``stream_members``):

1. the replica set becomes target + the replicas leaving (the target first), and
   ``reassign/<log id>`` = ``{"target", "original", "node"}`` records the move, in one
   transaction; the record is on this node's membership lease, so a node that dies
   mid-way leaves no stale reassignment (the replica set then stays the larger one:
   nothing is lost, the move can be asked again);
2. the new replicas catch up: the partition's leader ships its log and adds each to
   the ISR (for partition 0, the stream's group offsets log too);
3. once every target replica is in sync, a leader that is leaving hands over to one
   that stays, and the replica set becomes the target, the record deleted in the same
   transaction (compared with its revision: a cancel or a newer move wins).

A cancel (Kafka's null replicas) puts the original replica set back and deletes the
record. ListPartitionReassignments reads the records. Broker ids are the nodes' (a
CRC of the name, ``kafka_peers.broker_id``), over every node the cluster knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from smartbroker.cluster.etcd_client import Delete, Put
from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.cluster.replication.records import LogName
from smartbroker.cluster.stream_members import (
    BUSY,
    TIMEOUT,
    UNKNOWN,
    ReplicaError,
    StreamState,
    change,
    read_stream,
)
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.reassignments import (
    NO_REASSIGNMENT_IN_PROGRESS,
    Ongoing,
    ReassignError,
    check_target,
)

log = logging.getLogger("smartbroker.cluster")
PREFIX = "reassign/"
CHECK = 0.2  # seconds between two looks at the new replicas' progress
RETRY = 1.0  # seconds before a move goes on after etcd failed it
HAND_OVER = 30.0  # seconds a leaving leader has to hand over (then the move is retried)


def _kafka_error(exc: ReplicaError) -> ReassignError:
    if exc.kind == UNKNOWN:
        return ReassignError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc))
    if exc.kind == BUSY:
        return ReassignError(ErrorCode.REQUEST_TIMED_OUT, str(exc))
    return ReassignError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, str(exc))


class StreamReassigner:
    """This node's side of the reassignments of the Kafka vhost's topics."""

    def __init__(self, node: Any, vhost: str) -> None:
        self.etcd = node.etcd
        self.membership = node.membership
        self.name: str = node.name
        self.vhost = vhost
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, topic: str, partition: int) -> str:
        return PREFIX + LogName(self.vhost, topic, partition).id

    @staticmethod
    def _brokers(state: StreamState) -> dict[int, str]:
        """Broker id -> node, for every node the cluster knows (up or not)."""
        return {broker_id(n): n for n in state.known | state.up}

    async def alter(self, topic: str, partition: int, replicas: list[int] | None,
                    allow_factor_change: bool) -> None:
        try:
            state = await read_stream(self.etcd, self.vhost, topic)
            members = state.partition(partition).members
        except ReplicaError as exc:
            raise _kafka_error(exc) from None
        key = self._key(topic, partition)
        found = await self.etcd.get(key)
        if replicas is None:
            if found is None:
                raise ReassignError(NO_REASSIGNMENT_IN_PROGRESS, "Unable to find an ongoing "
                                    f"reassignment for {topic}-{partition}.")
            await self._cancel(topic, partition, key, found)
            return
        names = self._brokers(state)
        check_target(replicas, set(names))
        if not allow_factor_change and len(replicas) != len(members):
            raise ReassignError(ErrorCode.INVALID_REPLICATION_FACTOR,
                                f"The replication factor is changed from {len(members)} to "
                                f"{len(replicas)} but AllowReplicationFactorChange is false")
        target = [names[b] for b in replicas]
        previous = _record(found.value) if found is not None else None
        original = previous["original"] if previous else members
        if target == members and previous is None:
            return  # already so: nothing under way
        record = json.dumps({"target": target, "original": original, "node": self.name},
                            separators=(",", ":")).encode()

        def plan(state: StreamState, now: list[str]) -> list[str]:
            return [*target, *(m for m in now if m not in target)]  # the target first

        compare = {key: found.mod_revision if found is not None else 0}
        try:
            _, revision = await change(self.etcd, self.vhost, topic, partition, plan,
                                       HAND_OVER, [Put(key, record, self.membership.lease)],
                                       compare)
        except ReplicaError as exc:
            raise _kafka_error(exc) from None
        self._start(topic, partition, target, revision)

    def _start(self, topic: str, partition: int, target: list[str], revision: int) -> None:
        task = asyncio.get_running_loop().create_task(
            self._finish(topic, partition, target, revision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, topic: str, partition: int, target: list[str],
                      revision: int) -> None:
        """Steps 2 and 3 (the module docstring), while the record is this move's: a
        hand-over that did not finish in time is tried again, as Kafka's controller
        keeps a reassignment going; a topic that went ends it (its record deleted)."""
        key = self._key(topic, partition)

        def plan(state: StreamState, now: list[str]) -> list[str] | None:
            return list(target)

        try:
            while True:
                found = await self.etcd.get(key)
                if found is None or found.mod_revision != revision:
                    return  # cancelled, or replaced by a newer move
                state = await read_stream(self.etcd, self.vhost, topic)
                if all(n in one.isr for one in state.affected(partition) for n in target):
                    try:
                        await change(self.etcd, self.vhost, topic, partition, plan,
                                     HAND_OVER, [Delete(key)], {key: revision})
                    except ReplicaError as exc:
                        if exc.kind not in (TIMEOUT, BUSY):
                            raise
                        log.info("reassignment of %s-%d: %s; trying again", topic,
                                 partition, exc)
                    else:
                        log.info("reassignment of %s-%d done: replicas %s", topic,
                                 partition, ",".join(target))
                        return
                await asyncio.sleep(CHECK)
        except ReplicaError as exc:  # the topic went, or nothing in sync would be left
            log.warning("reassignment of %s-%d to %s stopped: %s", topic, partition,
                        ",".join(target), exc)
            with contextlib.suppress(Exception):
                await self.etcd.commit([Delete(key)], mod_revisions={key: revision})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: one line, and the move goes on later
            log.warning("reassignment of %s-%d to %s paused: %s", topic, partition,
                        ",".join(target), exc)
            await asyncio.sleep(RETRY)
            self._start(topic, partition, target, revision)

    async def _cancel(self, topic: str, partition: int, key: str, found: Any) -> None:
        """Kafka's cancel: the original replicas back, the record gone."""
        record = _record(found.value)
        original = record["original"] if record else None

        def plan(state: StreamState, now: list[str]) -> list[str] | None:
            return list(original) if original else None

        try:
            await change(self.etcd, self.vhost, topic, partition, plan, HAND_OVER,
                         [Delete(key)], {key: found.mod_revision})
        except ReplicaError as exc:
            raise _kafka_error(exc) from None

    async def ongoing(self) -> list[Ongoing]:
        out: list[Ongoing] = []
        found, _ = await self.etcd.range(PREFIX)
        for kv in found:
            name = LogName.parse(kv.key[len(PREFIX):])
            record = _record(kv.value)
            if name is None or record is None or name.partition is None \
                    or name.vhost != self.vhost:
                continue
            try:
                state = await read_stream(self.etcd, self.vhost, name.queue)
                members = state.partition(name.partition).members
            except ReplicaError:
                continue
            target, original = record["target"], record["original"]
            out.append(Ongoing(name.queue, name.partition,
                               tuple(broker_id(n) for n in members),
                               tuple(broker_id(n) for n in target if n not in original),
                               tuple(broker_id(n) for n in original if n not in target)))
        return out

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _record(raw: bytes) -> dict[str, list[str]] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    target, original = data.get("target"), data.get("original")
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v)
               for v in (target, original)):
        return None
    return {"target": target, "original": original}
