"""The replication core with real etcd, real cluster links and real segment logs: three
nodes in one process (each its own etcd client, lease, link and ``Replication``).

A log created on n1 is copied to n2 and n3 and ``committed`` only once they hold it; the
leader killed (its lease revoked, its link cut) is replaced by an ISR member through
etcd with a higher epoch, which holds every committed record; the old leader restarted
cuts the tail nobody else had and copies the new leader's log; appends of an older epoch
are refused; a leader whose lease deadline has passed confirms nothing, steps down and
gives its key up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from smartbroker.cluster.etcd_client import EtcdClient, Put
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.cluster.link import ClusterLink
from smartbroker.cluster.link_setup import start_link
from smartbroker.cluster.membership import Membership, record_for
from smartbroker.cluster.replication import LogName, NotLeader, ReplicatedLog, Replication, wire
from smartbroker.cluster.replication.records import LEADER, IsrRecord
from smartbroker.store.log import SegmentLog

NAME = LogName("/", "orders")
MEMBERS = ("n1", "n2", "n3")


class Node:
    """One in-process node: etcd client, membership (2 s lease), link, replication."""

    def __init__(self, etcd: EtcdProcess, cluster: str, name: str, data: Path) -> None:
        self.etcd, self.cluster, self.name, self.data = etcd, cluster, name, data
        self.roles: list[str] = []

    async def start(self) -> Node:
        self.data.mkdir(exist_ok=True)
        self.client = EtcdClient(self.etcd.endpoint, self.cluster)
        await self.client.connect()
        self.membership = Membership(self.client, record_for(self.name, "127.0.0.1", {},
                                                             self.data), ttl=2)
        self.link: ClusterLink = await start_link(self.name, self.cluster, "127.0.0.1", 0,
                                                  None, self.client, self.membership)
        self.membership.record = dataclasses.replace(self.membership.record,
                                                     cluster_port=self.link.port)
        await self.membership.start()
        self.replication = await Replication(self.name, self.link, self.client,
                                             self.membership, replica_lag_ms=2000).start()
        self.log = SegmentLog(self.data / "log", segment_bytes=64 << 10)
        return self

    async def open(self) -> ReplicatedLog:
        self.rlog = await self.replication.open(NAME, self.log, MEMBERS,
                                                on_role_change=self.roles.append)
        return self.rlog

    async def kill(self) -> None:
        """As a kill -9 looks to the others: the link cut, the lease gone (revoked, so
        the test does not wait out its TTL), nothing flushed or said."""
        await self.link.close()
        for task in list(self.membership._tasks):  # noqa: SLF001
            task.cancel()
        await self.client.revoke_lease(self.membership.lease)
        await self.replication.stop()
        self.log.close()
        await self.client.close()

    async def stop(self) -> None:
        await self.membership.stop()
        await self.replication.stop()
        await self.link.close()
        self.log.close()
        await self.client.close()


async def until(cond, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := cond()):
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)
    return found


def payloads(lg: SegmentLog) -> list[tuple[int, bytes]]:
    return [(r.offset, r.payload) for r in lg.scan_records(0)]


async def three(etcd: EtcdProcess, cluster: str, tmp: Path) -> list[Node]:
    nodes = [await Node(etcd, cluster, n, tmp / n).start() for n in MEMBERS]
    for node in nodes:
        await asyncio.gather(*(node.link.wait_connected(o.name) for o in nodes
                               if o is not node))
    for node in nodes:
        await node.open()
    return nodes


def test_commit_failover_truncation_and_fencing(etcd: EtcdProcess, cluster_name: str,
                                                tmp_path: Path) -> None:
    async def main() -> None:
        n1, n2, n3 = await three(etcd, cluster_name, tmp_path)
        assert n1.rlog.role == "leader" and n1.roles == ["leader"]
        await until(lambda: n2.rlog.leader == "n1" and n3.rlog.leader == "n1", "followers")
        epoch1 = n1.rlog.epoch
        offsets = [n1.log.append(b"m%d" % i) for i in range(200)]
        n1.log.append_batch([b"b1", b"b2"])
        await n1.rlog.committed(offsets[-1] + 2)
        for follower in (n2, n3):
            assert follower.log.durable_offset >= 202  # held (fsynced) before the commit
        assert n1.rlog.high_watermark == 202
        assert payloads(n2.log) == payloads(n3.log) == payloads(n1.log)
        with pytest.raises(NotLeader):
            await n2.rlog.committed(0)

        # a tail only n1 has (appended and killed in the same loop pass: never shipped)
        n1.log.append(b"lost-1")
        n1.log.append(b"lost-2")
        n1.log.flush()
        await n1.kill()
        new = await until(lambda: next((n for n in (n2, n3) if n.rlog.role == "leader"),
                                       None), "a new leader")
        other = n3 if new is n2 else n2
        assert new.rlog.epoch > epoch1
        assert new.log.next_offset == 202  # every committed record
        await until(lambda: other.rlog.leader == new.name, "the other follows")
        more = new.log.append(b"after")
        # n1 is down: the ISR shrinks to the two survivors (membership says so), then
        # the record commits on both
        await asyncio.wait_for(new.rlog.committed(more), 10)
        assert "n1" not in new.rlog.isr
        record = IsrRecord.decode((await new.client.get("replica/isr/%2F/orders")).value)
        assert record is not None and record.isr == tuple(sorted({new.name, other.name}))

        # the old leader comes back: it cuts its tail and copies the new leader's log
        n1 = await Node(etcd, cluster_name, "n1", tmp_path / "n1").start()
        assert n1.log.next_offset == 204  # the lost tail is still on disk
        await n1.open()
        await until(lambda: payloads(n1.log) == payloads(new.log), "n1 caught up")
        assert [p for _, p in payloads(n1.log)][-1] == b"after"
        await until(lambda: "n1" in new.rlog.isr, "n1 back in sync", timeout=10)
        assert n1.rlog.checkpoints.entries == new.rlog.checkpoints.entries

        # records nobody waits for (settlements) are shipped a little later, unasked
        settled = new.log.append(b"settled")
        new.rlog.appended(urgent=False)
        await until(lambda: n1.log.durable_offset > settled
                    and other.log.durable_offset > settled, "lazy records shipped",
                    timeout=5)

        # an append of an older epoch is refused: the sender learns it is stale
        acks: list[tuple] = []
        n1.link.on_messages(wire.ACK, lambda peer, items: acks.extend(items))
        n1.link.send(other.name, wire.APPEND, (epoch1, epoch1, 0, 0, 206, 206, NAME.id, b""))
        await until(lambda: acks, "a refusal")
        assert acks[0][2] == wire.STALE and acks[0][1] == new.rlog.epoch

        # a leader past its lease deadline confirms nothing and steps down
        last = new.log.append(b"unconfirmed")
        new.membership.lease_deadline = 0.0
        lapsed = new.rlog.epoch
        with pytest.raises(NotLeader):
            await asyncio.wait_for(new.rlog.committed(last), 5)
        assert new.rlog.role != "leader"
        # its key, still on a live lease, is given up: a member takes over in a newer
        # epoch (maybe this node again, once its next keep-alive moves the deadline)
        await until(lambda: any(n.rlog.role == "leader" and n.rlog.epoch > lapsed
                                for n in (n1, new, other)), "a successor")
        for node in (n1, new, other):
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_leader_key_is_on_the_lease(etcd: EtcdProcess, cluster_name: str,
                                    tmp_path: Path) -> None:
    """The leader key lives on the leader's membership lease and its mod_revision is the
    epoch; a transfer moves the leadership; a clean stop of the leader hands the log over
    at once."""
    async def main() -> None:
        nodes = await three(etcd, cluster_name, tmp_path)
        n1 = nodes[0]
        kv = await n1.client.get(f"{LEADER}{NAME.id}")
        assert kv is not None and kv.lease == n1.membership.lease
        assert kv.mod_revision == n1.rlog.epoch
        # a transfer: n1 stops its owner, n3 gets everything, n1 gives the key up, n3 (the
        # only candidate while the transfer key names it) takes it
        last = n1.log.append(b"before the transfer")
        await n1.rlog.committed(last)
        await n1.replication.transfer(NAME, "n3")
        n3 = nodes[2]
        await until(lambda: n3.rlog.role == "leader", "n3 leads")
        assert n1.roles == ["leader", "none", "follower"] and n3.rlog.epoch > kv.mod_revision
        assert payloads(n3.log) == payloads(n1.log)
        # a key naming a node that does not act on it (its election's answer lost):
        # that node gives it up and a proper election follows
        n2 = nodes[1]
        key = f"{LEADER}{NAME.id}"
        held = await n2.client.get(key)
        assert held is not None
        fake = await n2.client.commit([Put(key, b'{"node":"n2"}', n2.membership.lease)],
                                      mod_revisions={key: held.mod_revision})
        assert fake is not None
        await until(lambda: any(n.rlog.role == "leader" and n.rlog.epoch > fake
                                for n in nodes), "an election after the orphan key")
        await n3.stop()
        await until(lambda: any(n.rlog.role == "leader" for n in nodes[:2]), "a new leader")
        for node in nodes[:2]:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_follower_down_catches_up_from_older_segments(etcd: EtcdProcess, cluster_name: str,
                                                        tmp_path: Path) -> None:
    """A follower killed leaves the ISR within about a second (its link), so commits go
    on with the other two; restarted, it copies what it missed over several segments
    (the frame-by-frame path) and the leader's new log start, and comes back in sync."""
    async def main() -> None:
        n1, n2, n3 = await three(etcd, cluster_name, tmp_path)
        first = n1.log.append(b"first")
        await n1.rlog.committed(first)
        await n3.kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        last = n1.log.append(b"while n3 is down")
        await asyncio.wait_for(n1.rlog.committed(last), 5)
        assert loop.time() - started < 3 and "n3" not in n1.rlog.isr
        n1.log.append_batch([b"batch-%d" % i for i in range(50)])
        for i in range(3000):
            last = n1.log.append(b"y" * 100 + b"%d" % i)
        await n1.rlog.committed(last)
        assert n1.log.segment_count > 3
        n1.log.delete_before(n1.log.segments()[2].base_offset)  # the leader's start moves
        n3 = await Node(etcd, cluster_name, "n3", tmp_path / "n3").start()
        await n3.open()
        await until(lambda: "n3" in n1.rlog.isr, "n3 back in sync")
        start = n1.log.first_offset
        assert [r for r in payloads(n3.log) if r[0] >= start] == payloads(n1.log)
        assert n3.log.first_offset <= start and n3.log.next_offset == n1.log.next_offset
        for node in (n1, n2, n3):
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
