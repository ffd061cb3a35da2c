"""``Replication``: the node-wide service that every replicated log of this node goes
through (built by ``cluster/node.py`` once the link and membership run).

It owns what is shared: the link's ``APPEND``/``ACK`` channels and its two calls
(dispatched to logs by id), one etcd watch of ``replica/`` (leader, ISR and transfer
keys, dispatched the same way), a tick (lease checks, probes, ISR upkeep, elections to
retry), and the elections themselves (``election.elect``, ranked so that the member
with the most of the log tries first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.etcd_client import (
    Delete,
    EtcdUnavailable,
    RevisionCompactedError,
    stop_tasks,
)
from smartbroker.cluster.link import CallError, PeerDown
from smartbroker.cluster.replication import election, wire
from smartbroker.cluster.replication.records import (
    ISR,
    KINDS,
    LEADER,
    PREFIX,
    TRANSFER,
    LogName,
    Versioned,
    decode_node,
    default_min_insync,
    encode_node,
    encode_transfer,
    key_of,
    split_key,
)
from smartbroker.cluster.replication.replicated_log import ReplicatedLog, RoleCallback

if TYPE_CHECKING:
    from smartbroker.cluster.etcd_client import EtcdClient
    from smartbroker.cluster.link import ClusterLink
    from smartbroker.cluster.membership import Membership
    from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.cluster.replication")
TICK = 0.25  # seconds between lease checks, probes, ISR upkeep
ELECTION_STEP = 0.2  # seconds a candidate waits per better-placed candidate
NOT_HERE = 404


class Replication:
    """See the module docstring. ``lag``: replica_lag_ms in seconds."""

    def __init__(self, node: str, link: ClusterLink, etcd: EtcdClient, membership: Membership,
                 *, replica_lag_ms: float = 10_000, tick: float = TICK) -> None:
        self.node = node
        self.link = link
        self.etcd = etcd
        self.membership = membership
        self.lag = replica_lag_ms / 1000
        self.tick_seconds = tick
        self.logs: dict[str, ReplicatedLog] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> Replication:
        link = self.link
        link.on_messages(wire.APPEND, self._on_append)
        link.on_messages(wire.ACK, self._on_ack)
        link.on_call(wire.END_FOR_EPOCH, self._end_for_epoch)
        link.on_call(wire.LOG_END, self._log_end)
        link.on_peer_up(self._peer_up)
        link.on_peer_down(self._peer_down)
        link.on_writable(self._writable)
        _, revision = await self.etcd.range(PREFIX + "\0", prefix=False)  # just "now"
        self._loops = [asyncio.create_task(self._watch(revision + 1), name="replica-watch"),
                       asyncio.create_task(self._ticker(), name="replica-tick")]
        return self

    async def stop(self) -> None:
        for rlog in list(self.logs.values()):
            rlog.close()
        self.logs.clear()
        loops, self._loops = self._loops, []
        await stop_tasks([*loops, *self._tasks])

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A background task ended: an error is one log line, never an unretrieved
        exception's traceback."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("replication task failed: %s: %s", type(exc).__name__, exc)

    # -- the owners' API -----------------------------------------------------------------------
    def open(self, name: LogName | str, lg: SegmentLog, members: Sequence[str],
             min_insync: int | None = None,
             on_role_change: RoleCallback | None = None) -> ReplicatedLog:
        """Replicate ``lg`` (this node being one of ``members``; the first of them is the
        first leader when the replica set is new). Returns at once, role ``none``; the
        keys are read in the background and ``on_role_change`` tells the role. Awaiting
        the result waits for those reads (and, for a new replica set created here, for
        this node to lead it)."""
        name = _name(name)
        members = tuple(members)
        if name.id in self.logs:
            raise ValueError(f"{name.id} is open already")
        rlog = ReplicatedLog(self, name, lg, members,
                             min_insync or default_min_insync(len(members)), on_role_change)
        self.logs[name.id] = rlog  # before the reads: the watch's news is not lost meanwhile
        rlog.electing = rlog.opening = self.spawn(self._first_reads(rlog))
        return rlog

    async def _first_reads(self, rlog: ReplicatedLog) -> None:
        """The three keys as of now, then an election or the replica set's creation if
        one is due (retried while etcd does not answer)."""
        delay = 0.1
        while not rlog.closed:
            try:
                for kind in (TRANSFER, ISR, LEADER):
                    rlog.apply(kind, await election.read(self.etcd, rlog.name, kind))
                break
            except (EtcdUnavailable, TimeoutError) as exc:
                log.info("replica keys of %s not read yet: %s", rlog.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        rlog.electing = None
        if rlog.leader is None and rlog.leading is None:
            self.elect_soon(rlog)
        if rlog.keys[ISR].value is None and isinstance(rlog.electing, asyncio.Task):
            await asyncio.wait([rlog.electing])  # a new replica set: led here on return

    def get(self, name: LogName | str) -> ReplicatedLog | None:
        return self.logs.get(_name(name).id)

    def close(self, name: LogName | str) -> None:
        """Stop replicating the log here (a node stopping, a member removed); its keys
        stay (the others go on)."""
        rlog = self.logs.pop(_name(name).id, None)
        if rlog is not None:
            rlog.close()

    async def forget(self, name: LogName | str) -> None:
        """The log is gone everywhere (its queue deleted): close it and delete its keys."""
        name = _name(name)
        self.close(name)
        await self.etcd.commit([Delete(key_of(kind, name)) for kind in KINDS])

    async def transfer(self, name: LogName | str, to: str, ttl: int = 10) -> None:
        """Ask the leader to hand the log over to ``to``: the transfer key, on a lease of
        ``ttl`` seconds of its own (a transfer that does not happen leaves nothing)."""
        name = _name(name)
        lease = await self.etcd.grant_lease(ttl)
        await self.etcd.put(key_of(TRANSFER, name), encode_transfer(to), lease)

    async def give_up(self, rlog: ReplicatedLog, epoch: int) -> bool:
        """Delete this node's leader key of ``epoch`` (a transfer): False if it is not
        that key any more."""
        key = key_of(LEADER, rlog.name)
        return await self.etcd.commit([Delete(key)], mod_revisions={key: epoch}) is not None

    async def transferred(self, rlog: ReplicatedLog, revision: int) -> None:
        """The transfer naming this node is done: its key goes (unless rewritten since),
        so the others may compete again if this node fails."""
        key = key_of(TRANSFER, rlog.name)
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            await self.etcd.commit([Delete(key)], mod_revisions={key: revision})

    # -- elections -------------------------------------------------------------------------------
    def elect_soon(self, rlog: ReplicatedLog) -> None:
        """Try to lead ``rlog`` if it has no leader and this node may (an ISR member,
        with a lease, and no transfer naming another node); or create its replica set
        if there is none and this node is its first member."""
        m = self.membership
        if (rlog.electing is not None or rlog.closed or rlog.leading is not None
                or rlog.following.busy  # a truncation may be under way: not while it runs
                or rlog.keys[LEADER].value or not m.lease
                or asyncio.get_running_loop().time() >= m.lease_deadline):
            return
        if rlog.keys[ISR].value is None:
            if rlog.members and rlog.members[0] == self.node and not rlog.had_isr:
                rlog.electing = self.spawn(self._create(rlog))
            return
        if self.node not in rlog.isr:
            return
        target = rlog.keys[TRANSFER].value
        if target and decode_node(target, "to") not in (None, self.node):
            return
        rlog.electing = self.spawn(self._elect(rlog))

    async def _create(self, rlog: ReplicatedLog) -> None:
        try:
            lease = self.membership.lease
            epoch = await election.create(self.etcd, rlog.name, self.node, rlog.members, lease)
            rlog.apply(ISR, await election.read(self.etcd, rlog.name, ISR))
            if epoch is not None:
                log.info("replica set of %s created: %s", rlog.id, ",".join(rlog.members))
                rlog.keys[LEADER] = Versioned(encode_node(self.node), epoch, lease)
                rlog.elected(epoch, lease)
            else:
                rlog.apply(LEADER, await election.read(self.etcd, rlog.name, LEADER))
        except (EtcdUnavailable, TimeoutError) as exc:
            log.info("replica set of %s not created yet: %s", rlog.id, exc)
        except Exception:
            log.exception("replica set of %s not created", rlog.id)
        finally:
            rlog.electing = None

    async def _elect(self, rlog: ReplicatedLog) -> None:
        try:
            target = rlog.keys[TRANSFER].value
            handed = target is not None and decode_node(target, "to") == self.node
            rank = 0 if handed else await self._rank(rlog)
            if rank:
                await asyncio.sleep(rank * ELECTION_STEP)
            for _ in range(5):
                lease = self.membership.lease
                target = rlog.keys[TRANSFER].value  # (one may have come while it waited)
                if (rlog.closed or rlog.keys[LEADER].value or self.node not in rlog.isr
                        or not lease or rlog.following.busy
                        or decode_node(target or b"", "to") not in (None, self.node)):
                    return
                epoch = await election.elect(self.etcd, rlog.name, self.node, lease,
                                             rlog.isr_revision)
                if epoch is not None:
                    rlog.keys[LEADER] = Versioned(encode_node(self.node), epoch, lease)
                    rlog.elected(epoch, lease)
                    return
                rlog.apply(LEADER, await election.read(self.etcd, rlog.name, LEADER))
                rlog.apply(ISR, await election.read(self.etcd, rlog.name, ISR))
        except (EtcdUnavailable, TimeoutError) as exc:
            log.info("election for %s postponed: %s", rlog.id, exc)
        except Exception:
            log.exception("election for %s failed", rlog.id)
        finally:
            rlog.electing = None

    async def _rank(self, rlog: ReplicatedLog) -> int:
        """How many live ISR members hold more of the log than this one (they try first)."""
        mine = (rlog.checkpoints.latest, rlog.log.next_offset)
        others = [n for n in rlog.isr if n != self.node and self.link.connected(n)]

        async def ask(node: str) -> tuple[int, int] | None:
            try:
                raw = await self.link.call(node, wire.LOG_END,
                                           wire.dumps({"log": rlog.id}), timeout=0.5)
                data = wire.loads(raw)
                return int(data["epoch"]), int(data["end"])
            except Exception:  # noqa: BLE001 - best effort: a member that cannot say ranks last
                return None

        ends = await asyncio.gather(*(ask(n) for n in others))
        order = {n: i for i, n in enumerate(rlog.members)}
        me = (mine, -order.get(self.node, 0))
        return sum(1 for node, end in zip(others, ends, strict=True)
                   if end is not None and (end, -order.get(node, 0)) > me)

    # -- the link ---------------------------------------------------------------------------------
    def _on_append(self, peer: str, items: list[tuple]) -> None:
        for item in items:
            log_id = item[6].decode(errors="replace")
            rlog = self.logs.get(log_id)
            if rlog is None:
                with contextlib.suppress(PeerDown):
                    self.link.send(peer, wire.ACK, (item[0], 0, wire.UNKNOWN, log_id))
                continue
            rlog.following.on_append(peer, item)

    def _on_ack(self, peer: str, items: list[tuple]) -> None:
        for epoch, offset, code, raw_id in items:
            rlog = self.logs.get(raw_id.decode(errors="replace"))
            if rlog is not None and rlog.leading is not None:
                rlog.leading.on_ack(peer, epoch, code, offset)

    def _rlog_of(self, payload: bytes) -> tuple[ReplicatedLog, dict[str, Any]]:
        try:
            data = wire.loads(payload)
            rlog = self.logs.get(str(data["log"]))
        except (ValueError, KeyError, TypeError):
            raise CallError(400, "bad request") from None
        if rlog is None:
            raise CallError(NOT_HERE, "log not open here")
        return rlog, data

    def _end_for_epoch(self, _peer: str, payload: bytes) -> bytes:
        rlog, data = self._rlog_of(payload)
        if rlog.leading is None:
            raise CallError(NOT_HERE, "not the leader")
        try:
            asked = int(data["epoch"])
        except (KeyError, TypeError, ValueError):
            raise CallError(400, "bad epoch") from None
        return wire.dumps(rlog.following.answer_end(asked))

    def _log_end(self, _peer: str, payload: bytes) -> bytes:
        rlog, _ = self._rlog_of(payload)
        return wire.dumps({"epoch": rlog.checkpoints.latest, "end": rlog.log.next_offset})

    def _peer_up(self, peer: str) -> None:
        for rlog in list(self.logs.values()):
            if rlog.leading is not None:
                rlog.leading.peer_up(peer)

    def _peer_down(self, peer: str) -> None:
        for rlog in list(self.logs.values()):
            if rlog.leading is not None:
                rlog.leading.peer_down(peer)

    def _writable(self, peer: str, spec: Any) -> None:
        if spec is not None and spec != wire.APPEND:
            return
        for rlog in list(self.logs.values()):
            if rlog.leading is not None:
                rlog.leading.writable(peer)

    # -- etcd and time ------------------------------------------------------------------------------
    async def _watch(self, revision: int) -> None:
        while True:
            try:
                async for event in self.etcd.watch(PREFIX, start_revision=revision):
                    revision = event.revision + 1
                    found = split_key(event.key)
                    rlog = self.logs.get(found[1]) if found is not None else None
                    if rlog is not None and found is not None:
                        value = event.value if event.kind == "put" else None
                        rlog.apply(found[0], Versioned(value, event.revision))
                return
            except asyncio.CancelledError:
                raise
            except (RevisionCompactedError, EtcdUnavailable, TimeoutError) as exc:
                log.info("replica watch restarts: %s", exc)
            except Exception:
                log.exception("replica watch failed; restarting")
            await asyncio.sleep(1.0)
            with contextlib.suppress(EtcdUnavailable, TimeoutError):
                _, now = await self.etcd.range(PREFIX + "\0", prefix=False)
                for rlog in list(self.logs.values()):
                    for kind in KINDS:
                        rlog.apply(kind, await election.read(self.etcd, rlog.name, kind))
                revision = now + 1

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_seconds)
            now = loop.time()
            for rlog in list(self.logs.values()):
                try:
                    rlog.tick(now)
                except Exception:
                    log.exception("replica tick of %s failed", rlog.id)


def _name(name: LogName | str) -> LogName:
    if isinstance(name, LogName):
        return name
    found = LogName.parse(name)
    if found is None:
        raise ValueError(f"not a log id: {name!r}")
    return found
