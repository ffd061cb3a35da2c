"""The leader's side of one replicated log: ship, count acks, confirm, keep the ISR.

Shipping runs once per loop pass after something was appended (``kick``): each
follower's cursor reads the frames it lacks (``store/replica.read_chunk``: in the usual
case one slice of what the leader just wrote, shared by the followers at the same
place) and sends them on the link's ``APPEND`` channel, batched with everything else that
pass and stopped while the link has no credit for that follower. Acks move the follower's
progress, the high watermark (``isr.high_watermark``) and release ``committed`` waiters,
but only while the in-sync set has ``min_insync`` members and this node's lease holds.

The ISR record in etcd changes only here (``election.write_isr``, fenced by this
leader's epoch): a member that lags more than ``replica_lag_ms`` or is down leaves, one
that caught up comes back. A member on its way in already counts for the high
watermark (more conservative); one on its way out still counts until etcd says so.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.etcd_client import EtcdUnavailable
from smartbroker.cluster.link import PeerDown
from smartbroker.cluster.replication import election, isr, wire
from smartbroker.cluster.replication.records import ISR, LEADER, IsrRecord, NotLeader
from smartbroker.store.replica import CHUNK_BYTES, read_chunk

if TYPE_CHECKING:
    from smartbroker.cluster.replication.replicated_log import ReplicatedLog

log = logging.getLogger("smartbroker.cluster.replication")
_seq = itertools.count()
LAZY_SHIP = 0.005  # seconds records nobody waits for may wait to be shipped


class Leader:
    """Leading ``rlog`` at ``epoch``, on membership lease ``lease``."""

    def __init__(self, rlog: ReplicatedLog, epoch: int, lease: int) -> None:
        self.rlog = rlog
        self.ctx = rlog.ctx
        self.epoch = epoch
        self.lease = lease
        self.loop = asyncio.get_running_loop()
        start = rlog.checkpoints.start_of(epoch)
        self.epoch_start = rlog.log.next_offset if start is None else start
        now = self.loop.time()
        self.progress = {n: isr.Progress(n, now) for n in rlog.members if n != self.ctx.node}
        for p in self.progress.values():
            if not self.ctx.link.connected(p.node):
                p.down_since = now
        self.hw = rlog.high_watermark
        self.waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.adding: set[str] = set()
        self._in_sync_key: tuple[Any, int] | None = None
        self._in_sync: frozenset[str] = frozenset()
        self.isr_task: asyncio.Task[None] | None = None
        self.stopped: NotLeader | None = None
        self.handing_over = False  # a transfer: the owner stopped, the target catches up
        self._scheduled = False
        self._later: asyncio.TimerHandle | None = None  # kick_later's timer

    # -- shipping ------------------------------------------------------------------------
    def kick(self) -> None:
        """Something was appended: ship it at the end of this loop pass."""
        if not self._scheduled and self.stopped is None:
            self._scheduled = True
            self.loop.call_soon(self.ship)

    def kick_later(self) -> None:
        """Records nobody waits for (a quorum queue's settlements): shipped with the next
        kick, or within ``LAZY_SHIP`` seconds. A pass of acks alone then costs no
        ``APPEND``, follower fsync and ``ACK`` of its own."""
        if self._later is None and not self._scheduled and self.stopped is None:
            self._later = self.loop.call_later(LAZY_SHIP, self.kick)

    def ship(self) -> None:
        self._scheduled = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self.stopped is not None:
            return
        try:
            self._ship()
        except (OSError, ValueError) as exc:  # a read of the log failed: the tick retries
            log.warning("shipping %s failed: %s", self.rlog.id, exc)
        if len(self.in_sync()) == 1:  # in sync alone: no ack will move the high watermark
            self.advance()

    def _ship(self) -> None:
        rlog, link = self.rlog, self.ctx.link
        lg = rlog.log
        now = self.loop.time()
        head = (self.epoch, self.hw, lg.first_offset)
        shared: dict[tuple[int, int, int], tuple[Any, ...]] = {}
        for p in self.progress.values():
            cursor = p.cursor
            if cursor is None or p.blocked or not link.connected(p.node):
                continue
            sent = False
            try:
                while True:
                    key = (cursor.offset, id(cursor.seg), cursor.pos)
                    hit = shared.get(key)
                    if hit is None:
                        data_epoch, limit = self._epoch_for(cursor.offset)
                        chunk = read_chunk(lg, cursor, CHUNK_BYTES, limit)
                        shared[key] = hit = (chunk, data_epoch, cursor.seg, cursor.pos)
                    else:
                        cursor.offset, cursor.seg, cursor.pos = hit[0].end, hit[2], hit[3]
                    chunk, data_epoch = hit[0], hit[1]
                    if chunk.end == chunk.start:
                        break
                    ok = link.send(p.node, wire.APPEND, (head[0], data_epoch, head[1], head[2],
                                                         chunk.start, chunk.end, rlog.id,
                                                         chunk.data))
                    sent = True
                    p.shipped(chunk.end, now)
                    if not ok:
                        p.blocked = True
                        break
                if sent:
                    p.sent_hw = self.hw
            except PeerDown:
                p.reset(None)
                p.down_since = p.down_since or now

    def _epoch_for(self, offset: int) -> tuple[int, int | None]:
        """(the epoch that wrote ``offset``, where the next epoch starts): a chunk never
        spans two epochs, so a follower records the same epoch starts."""
        if offset >= self.epoch_start:
            return self.epoch, None
        return self.rlog.checkpoints.epoch_at(offset)

    def _send_empty(self, p: isr.Progress, start: int) -> None:
        """A probe (where does your log end?) or a high watermark update."""
        try:
            self.ctx.link.send(p.node, wire.APPEND, (self.epoch, self.epoch, self.hw,
                                                     self.rlog.log.first_offset, start, start,
                                                     self.rlog.id, b""))
            p.sent_hw = self.hw
        except PeerDown:
            p.reset(None)
            p.down_since = p.down_since or self.loop.time()

    def writable(self, node: str) -> None:
        p = self.progress.get(node)
        if p is not None and p.blocked:
            p.blocked = False
            self.kick()

    def peer_up(self, node: str) -> None:
        p = self.progress.get(node)
        if p is not None:
            p.reset(None)
            p.down_since = None
            self._send_empty(p, self.rlog.log.next_offset)

    def peer_down(self, node: str) -> None:
        p = self.progress.get(node)
        if p is not None:
            p.reset(None)
            p.down_since = self.loop.time()

    # -- acks ----------------------------------------------------------------------------
    def on_ack(self, node: str, epoch: int, code: int, offset: int) -> None:
        if self.stopped is not None:
            return
        p = self.progress.get(node)
        if p is None:
            return
        if code == wire.STALE:
            if offset > self.epoch:
                self.rlog.step_down(f"node {node} has seen epoch {offset}, newer than "
                                    f"{self.epoch}")
            return
        if epoch != self.epoch:
            return
        if code == wire.UNKNOWN:
            p.reset(None)
            return
        if code == wire.MISMATCH or p.cursor is None:
            p.reset(offset)
            self.kick()
            if code == wire.MISMATCH:
                # its log matches this one up to ``offset``: one that holds everything
                # already (a whole-cluster restart) sends no other ack, and the high
                # watermark stayed where the election left it
                self.advance()
                return
        p.acknowledged(offset, self.rlog.log.next_offset, self.loop.time())
        self.advance()
        if node not in self.rlog.isr and self.isr_task is None:
            self.tend_isr()

    def in_sync(self) -> frozenset[str]:
        """The members the high watermark waits for: etcd's ISR, those on their way in,
        and this node (kept until either changes: asked on every commit)."""
        key = (self.rlog.isr, len(self.adding))
        if key != self._in_sync_key:
            self._in_sync_key = key
            self._in_sync = frozenset({*self.rlog.isr, *self.adding, self.ctx.node})
        return self._in_sync

    def advance(self) -> None:
        """A new high watermark (never lower), then the waiters it releases."""
        hw = isr.high_watermark(self.ctx.node, self.rlog.log.next_offset, self.progress,
                                self.in_sync())
        if hw > self.hw:
            self.hw = hw
            self.rlog.high_watermark = hw
            self.rlog.hw_changed()
        self.release()

    def lease_ok(self) -> bool:
        m = self.ctx.membership
        return m.lease == self.lease and self.loop.time() < m.lease_deadline

    def release(self) -> None:
        waiters = self.waiters
        if not waiters or not isr.enough(self.in_sync(), self.rlog.min_insync):
            return
        if not self.lease_ok():
            self.rlog.step_down("its lease lapsed")
            return
        hw = self.hw
        while waiters and waiters[0][0] < hw:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)

    def ready(self, offset: int) -> bool:
        """Whether ``offset`` is committed now (no waiting)."""
        return (offset < self.hw and isr.enough(self.in_sync(), self.rlog.min_insync)
                and self.lease_ok())

    def wait(self, offset: int) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        heapq.heappush(self.waiters, (offset, next(_seq), fut))
        return fut

    # -- the ISR ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.stopped is not None:
            return
        if not self.lease_ok():
            self.rlog.step_down("its lease lapsed")
            return
        lg = self.rlog.log
        for p in self.progress.values():
            if not self.ctx.link.connected(p.node) or p.blocked:
                continue
            if p.cursor is None:
                self._send_empty(p, lg.next_offset)
            elif p.sent_hw != self.hw and p.cursor.offset >= lg.next_offset:
                self._send_empty(p, p.cursor.offset)
        end = lg.next_offset
        # only what a failed read or a full link left behind: an idle log's tick reads
        # nothing (2,000 idle quorum queues cost their leader 10% of a core in reads)
        if any(p.cursor is not None and p.cursor.offset < end for p in self.progress.values()):
            self.kick()
        if self.isr_task is None:
            self.tend_isr()

    def tend_isr(self) -> None:
        rlog, ctx = self.rlog, self.ctx
        now = self.loop.time()
        up = {n for n in rlog.members if ctx.membership.is_up(n)}
        end = rlog.log.next_offset
        drop = isr.to_drop(ctx.node, rlog.isr, rlog.members, end, self.progress, up, now,
                           ctx.lag)
        add = isr.to_add(ctx.node, rlog.isr, rlog.members, self.hw, self.epoch_start,
                         self.progress, up)
        if drop or add or ctx.node not in rlog.isr:
            self.isr_task = self.loop.create_task(self._write_isr(drop, add))

    async def _write_isr(self, drop: list[str], add: list[str]) -> None:
        rlog = self.rlog
        self.adding.update(add)
        try:
            keep = {*rlog.isr, *add, self.ctx.node} - set(drop)
            record = IsrRecord(rlog.members, tuple(n for n in rlog.members if n in keep),
                               self.epoch)
            revision = await election.write_isr(self.ctx.etcd, rlog.name, self.epoch,
                                                rlog.isr_revision, record)
            if revision is not None:
                log.info("replica set of %s: in sync %s (epoch %d)", rlog.id,
                         ",".join(record.isr), self.epoch)
                rlog.set_isr(record, revision)
            else:  # someone else wrote: read both keys again (the leader key may be gone)
                rlog.apply(LEADER, await election.read(self.ctx.etcd, rlog.name, LEADER))
                rlog.apply(ISR, await election.read(self.ctx.etcd, rlog.name, ISR))
        except (EtcdUnavailable, TimeoutError) as exc:
            log.info("ISR of %s not written (retrying): %s", rlog.id, exc)
        except Exception:
            log.exception("ISR of %s not written", rlog.id)
        finally:
            self.adding.difference_update(add)
            self.isr_task = None
        if self.stopped is None:
            self.advance()

    def members_changed(self) -> None:
        now = self.loop.time()
        for node in self.rlog.members:
            if node != self.ctx.node and node not in self.progress:
                self.progress[node] = p = isr.Progress(node, now)
                if self.ctx.link.connected(node):
                    self._send_empty(p, self.rlog.log.next_offset)
                else:
                    p.down_since = now
        for node in [n for n in self.progress if n not in self.rlog.members]:
            del self.progress[node]
        self.advance()

    # -- the end ---------------------------------------------------------------------------
    def stop(self, error: NotLeader) -> None:
        """Leadership is over: every waiter fails (nothing more is confirmed here)."""
        self.stopped = error
        if self._later is not None:
            self._later.cancel()
            self._later = None
        waiters, self.waiters = self.waiters, []
        for _o, _s, fut in waiters:
            if not fut.done():
                fut.set_exception(error)
        if self.isr_task is not None:
            self.isr_task.cancel()
