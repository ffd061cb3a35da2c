"""Which node leads each queue: the choice (RabbitMQ's locators) and its record in etcd.

Every queue has one leader node, kept under ``placement/<vhost>/<queue>`` (names
percent-encoded, so '/' and any byte are safe in a key). The value is JSON:
``{"leader": node, "partitions": [node, ...]}``; ``partitions`` only for a stream with
more than one partition, whose partition leaders are spread round robin over the nodes.

How a leader is chosen is RabbitMQ's (rabbit_queue_location): the policy key
``queue-leader-locator`` wins over the ``x-queue-leader-locator`` argument;
``client-local`` (the default) puts the leader on the declaring node, ``balanced`` on the
up node leading the fewest queues; RabbitMQ's deprecated ``random``, ``least-leaders``
and ``min-masters`` mean ``balanced``. Exclusive and non-durable queues always live on
their declaring node (they die with it, as in RabbitMQ).

The choice is pure (``choose``, ``spread``); ``PlacementTable`` is the node's watched
copy of the records plus the create-if-absent write that makes the first declarer win
when two nodes declare the same queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from smartbroker.cluster.definitions_keys import seg, unseg
from smartbroker.cluster.etcd_client import stop_tasks

CLIENT_LOCAL = "client-local"
BALANCED = "balanced"
# rabbit_queue_location:queue_leader_locators(): the two current values, then the
# deprecated ones RabbitMQ still accepts and maps to balanced
LOCATORS = {CLIENT_LOCAL: CLIENT_LOCAL, BALANCED: BALANCED,
            "random": BALANCED, "least-leaders": BALANCED, "min-masters": BALANCED}
ARGUMENT = "x-queue-leader-locator"
POLICY_KEY = "queue-leader-locator"
PREFIX = "placement/"
log = logging.getLogger("smartbroker.cluster")


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def locator(arguments: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> str:
    """The effective locator: the policy's value first, then the argument, then
    client-local (rabbit_queue_location:leader_locator); values already validated."""
    for value in ((policy or {}).get(POLICY_KEY), arguments.get(ARGUMENT)):
        found = LOCATORS.get(_text(value)) if isinstance(_text(value), str) else None
        if found is not None:
            return found
    return CLIENT_LOCAL


def choose(where: str, local: str, up: Sequence[str], leaders: Mapping[str, int], *,
           durable: bool = True, exclusive: bool = False) -> str:
    """The leader node of a new queue. ``up``: the running nodes; ``leaders``: how many
    queues each node leads now. Ties go to the declaring node, then by name, so two
    nodes computing the same choice agree."""
    if where == CLIENT_LOCAL or exclusive or not durable or not up:
        return local
    return min(up, key=lambda node: (leaders.get(node, 0), node != local, node))


def spread(partitions: int, first: str, up: Sequence[str]) -> list[str]:
    """Leaders of a stream's partitions: round robin over the up nodes (in name order),
    starting at ``first`` (the node the locator chose), as the issue asks."""
    nodes = sorted(set(up) | {first})
    start = nodes.index(first)
    return [nodes[(start + i) % len(nodes)] for i in range(partitions)]


def key(vhost: str, queue: str) -> str:
    """The etcd key (below the cluster prefix) of a queue's placement: each name one
    percent-encoded segment, as ``definitions_keys.seg`` encodes them."""
    return f"{PREFIX}{seg(vhost).decode()}/{seg(queue).decode()}"


def parse_key(text: str | bytes) -> tuple[str, str] | None:
    """(vhost, queue) from a placement key, None if it is not one."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not text.startswith(PREFIX):
        return None
    parts = text[len(PREFIX):].split("/")
    if len(parts) != 2:
        return None
    return unseg(parts[0].encode()), unseg(parts[1].encode())


@dataclass(frozen=True)
class Placement:
    """Where one queue lives: its leader and, for a partitioned stream, each partition's.

    A replicated queue also names its replica set (docs/replication.md): ``members`` for
    a quorum queue or a one-partition stream, ``partition_members`` (one list per
    partition) for a partitioned stream; empty = not replicated. ``leader`` and
    ``partitions`` always name the CURRENT leaders, so routing follows a failover."""

    leader: str
    partitions: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    partition_members: tuple[tuple[str, ...], ...] = ()

    def encode(self) -> bytes:
        data: dict[str, Any] = {"leader": self.leader}
        if self.partitions:
            data["partitions"] = list(self.partitions)
        if self.members:
            data["members"] = list(self.members)
        if self.partition_members:
            data["partition_members"] = [list(m) for m in self.partition_members]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Placement | None:
        """None for a value that is not a placement (never a traceback on bad data)."""
        try:
            data = json.loads(raw)
            leader = data["leader"]
            partitions = tuple(data.get("partitions", ()))
            members = tuple(data.get("members", ()))
            partition_members = tuple(tuple(m) for m in data.get("partition_members", ()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        names = (leader, *partitions, *members, *(n for m in partition_members for n in m))
        if not all(isinstance(n, str) for n in names):
            return None
        return cls(leader, partitions, members, partition_members)

    def replicas(self, partition: int = 0) -> tuple[str, ...]:
        """The replica set of one partition (``members`` when there is one log); empty
        when that log is not replicated."""
        if self.partition_members:
            pm = self.partition_members
            return pm[partition] if 0 <= partition < len(pm) else ()
        return self.members


class KeyValue(Protocol):
    """What the table needs from the cluster's etcd client (``cluster/etcd_client.py``'s
    ``EtcdClient``), keys relative to the cluster prefix."""

    async def create_if_absent(self, key: str, value: bytes, lease: int = 0) -> tuple[bool, Any]:
        """Put ``key`` (on ``lease``) unless it exists: (created, the KV it holds)."""

    async def delete(self, key: str) -> Any: ...

    async def range(self, key: str) -> tuple[list[Any], int]:
        """Every KV (``.key``, ``.value``) under ``key``, and the revision read at."""

    def watch(self, key: str, *, start_revision: int | None = None) -> Any:
        """Changes under ``key`` (``.kind`` "put"/"delete", ``.key``, ``.value``)."""


class PlacementTable:
    """This node's copy of every placement: read at start (``open``), then followed by an
    etcd watch, and read on every declare and lookup without a round trip to etcd.
    ``on_change(vhost, queue)`` hears every placement that changed, whoever wrote it."""

    def __init__(self, node: str, kv: KeyValue | None = None) -> None:
        self.node = node
        self.kv = kv
        self.queues: dict[tuple[str, str], Placement] = {}
        self.on_change: list[Callable[[str, str], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # the last background write of each queue's placement: the next one waits for it,
        # so a release never deletes before the claim it follows was written (a stray)
        self._writes: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.revision = 0  # of the last placement change applied (visibility.py waits on it)
        # the node's membership lease: a transient queue's placement goes with its node
        self.lease: Callable[[], int] = lambda: 0

    async def open(self) -> PlacementTable:
        """Read every placement, then follow changes."""
        if self.kv is not None:
            found, revision = await self.kv.range(PREFIX)
            self.load((kv.key, kv.value) for kv in found)
            self.revision = revision
            self._spawn(self._follow(revision + 1))
        return self

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, set()
        await stop_tasks(tasks)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_order(self, vhost: str, queue: str, write: Callable[[], Any]) -> None:
        """``await write()`` in the background once the queue's previous write is done."""
        names = (vhost, queue)
        before = self._writes.get(names)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])
            await write()

        task = self._writes[names] = self._spawn(run())
        task.add_done_callback(
            lambda done: self._writes.pop(names) if self._writes.get(names) is done else None)

    async def _follow(self, revision: int) -> None:
        assert self.kv is not None
        while True:
            try:
                async for event in self.kv.watch(PREFIX, start_revision=revision):
                    revision = event.revision + 1
                    self.revision = event.revision
                    names = self.apply(event.key, event.value if event.kind == "put" else None)
                    if names is not None:
                        self._changed(*names)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # compacted history or etcd gone: read it all again
                log.warning("placement watch restarts: %s", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    found, revision = await self.kv.range(PREFIX)
                    before = set(self.queues)
                    self.queues.clear()
                    self.load((kv.key, kv.value) for kv in found)
                    self.revision = revision
                    revision += 1
                    for names in before | set(self.queues):
                        self._changed(*names)

    def _changed(self, vhost: str, queue: str) -> None:
        for callback in self.on_change:
            try:
                callback(vhost, queue)
            except Exception:
                log.exception("applying the placement of queue '%s' in vhost '%s' failed",
                              queue, vhost)

    def leader(self, vhost: str, queue: str) -> str | None:
        found = self.queues.get((vhost, queue))
        return None if found is None else found.leader

    def get(self, vhost: str, queue: str) -> Placement | None:
        return self.queues.get((vhost, queue))

    def counts(self) -> Counter[str]:
        """Queues led per node (partition leaders counted once per partition)."""
        counts: Counter[str] = Counter()
        for placement in self.queues.values():
            counts.update(placement.partitions or (placement.leader,))
        return counts

    def apply(self, text_key: str | bytes, value: bytes | None) -> tuple[str, str] | None:
        """A watched put (``value``) or delete (None); returns the queue it was about."""
        names = parse_key(text_key)
        if names is None:
            return None
        placement = None if value is None else Placement.decode(value)
        if placement is None:
            self.queues.pop(names, None)
        else:
            self.queues[names] = placement
        return names

    def load(self, items: Iterable[tuple[str | bytes, bytes]]) -> None:
        """The initial read of every placement key."""
        for text_key, value in items:
            self.apply(text_key, value)

    def propose(self, vhost: str, queue: str, arguments: Mapping[str, Any],
                policy: Mapping[str, Any] | None, up: Sequence[str], *, durable: bool,
                exclusive: bool, partitions: int = 1) -> Placement:
        """The placement this node would give a new queue (nothing written)."""
        where = locator(arguments, policy)
        leader = choose(where, self.node, up, self.counts(), durable=durable,
                        exclusive=exclusive)
        parts = tuple(spread(partitions, leader, up)) if partitions > 1 else ()
        return Placement(leader, parts)

    def claim(self, vhost: str, queue: str, placement: Placement, transient: bool = False) -> None:
        """Take ``placement`` now (the declare goes on with it) and write it to etcd in the
        background; if another node placed the queue first, its placement is adopted
        (``on_change`` tells the node to rebuild the queue accordingly)."""
        self.queues[(vhost, queue)] = placement
        if self.kv is not None:
            lease = self.lease() if transient else 0
            self._in_order(vhost, queue, lambda: self._record(vhost, queue, placement, lease))

    async def _record(self, vhost: str, queue: str, placement: Placement, lease: int = 0) -> None:
        try:
            held = await self.record(vhost, queue, placement, lease)
        except Exception as exc:
            log.warning("placement of queue '%s' in vhost '%s' not written: %s", queue, vhost, exc)
            return
        if held != placement:
            self._changed(vhost, queue)

    async def record(self, vhost: str, queue: str, placement: Placement,
                     lease: int = 0) -> Placement:
        """Write ``placement`` unless another node placed the queue first; returns the
        placement that holds (ours, or the winner's) and keeps it in the local copy."""
        names = (vhost, queue)
        if self.kv is not None:
            args = (key(vhost, queue), placement.encode(), *((lease,) if lease else ()))
            created, held = await self.kv.create_if_absent(*args)
            if not created:
                placement = Placement.decode(held.value) or placement
        self.queues[names] = placement
        return placement

    def release(self, vhost: str, queue: str) -> None:
        """The queue this node led was deleted: its placement goes (in the background)."""
        self.queues.pop((vhost, queue), None)
        if self.kv is not None:
            self._in_order(vhost, queue, lambda: self._release(vhost, queue))

    async def _release(self, vhost: str, queue: str) -> None:
        held = self.queues.get((vhost, queue))  # set again by a claim written meanwhile
        if held is None or held.leader == self.node:  # else another node's: it stays
            await self.forget(vhost, queue)

    async def forget(self, vhost: str, queue: str) -> None:
        """The queue was deleted."""
        self.queues.pop((vhost, queue), None)
        if self.kv is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(key(vhost, queue))
