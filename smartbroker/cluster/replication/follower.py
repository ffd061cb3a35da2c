"""The follower's side of one replicated log: check the epoch, append, fsync, ack.

A follower takes appends only from the leader of the epoch it has checked its log
against: the first append of a new epoch (a new leader, or this node just started)
starts the ``end_for_epoch`` exchange (Kafka's OffsetsForLeaderEpoch, KIP-279): the
follower sends its latest epoch, the leader answers the largest epoch it holds up to
that one and where it ends, and the follower cuts its log at the lower of that end and
its own end for the same epoch, then asks to be sent everything from its new end.
Appends with an epoch lower than the highest one seen are refused (``STALE``): an old
leader, paused or cut off, can no longer get anything acknowledged.

An ack is sent once the appended frames are fsynced (the log's own group commit, so
appends arriving during an fsync share the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.link import CallError, PeerDown
from smartbroker.cluster.replication import wire
from smartbroker.store.api import StoreUnavailable
from smartbroker.store.replica import BadChunk, Chunk, append_chunk, truncate

if TYPE_CHECKING:
    from smartbroker.cluster.replication.replicated_log import ReplicatedLog

log = logging.getLogger("smartbroker.cluster.replication")
HANDSHAKE_TIMEOUT = 5.0


class Follower:
    """Following whichever node leads ``rlog``."""

    def __init__(self, rlog: ReplicatedLog) -> None:
        self.rlog = rlog
        self.ctx = rlog.ctx
        self.validated = 0  # the epoch this log was checked against (end_for_epoch)
        self.source: str | None = None  # ... and the node that led it
        self.busy = False  # an end_for_epoch exchange (and maybe a truncation) runs
        self.log_start = 0
        self._pending: tuple[str, int, int] | None = None  # (leader, epoch, code) to ack
        self._acker: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """A new leader (or none): the next append is checked again."""
        self.validated, self.source = 0, None

    def on_append(self, peer: str, item: tuple) -> None:
        epoch, data_epoch, hw, log_start, start, end, _id, data = item
        rlog = self.rlog
        if rlog.leading is not None:
            if epoch <= rlog.epoch:
                self._refuse(peer, rlog.epoch)
                return
            rlog.step_down(f"node {peer} leads epoch {epoch}")
        if epoch < rlog.highest_epoch:
            self._refuse(peer, rlog.highest_epoch)
            return
        rlog.highest_epoch = epoch
        if epoch != self.validated or peer != self.source:
            if not self.busy:
                self.busy = True
                self.ctx.spawn(self._handshake(peer, epoch))
            return
        if self.busy:
            return
        lg = rlog.log
        if start != lg.next_offset:
            self.ack(peer, epoch, wire.MISMATCH)
            return
        if data or end > start:
            if data_epoch > rlog.checkpoints.latest:
                rlog.checkpoints.assign(data_epoch, start)
            try:
                append_chunk(lg, Chunk(start, end, data))
            except BadChunk as exc:
                log.warning("replica of %s: %s", rlog.id, exc)
                self.ack(peer, epoch, wire.MISMATCH)
                return
            except StoreUnavailable as exc:
                log.warning("replica of %s cannot append: %s", rlog.id, exc)
                return
        if log_start > self.log_start:
            self.log_start = log_start
            lg.delete_before(log_start)
        rlog.high_watermark = max(rlog.high_watermark, min(hw, lg.next_offset))
        self.ack(peer, epoch, wire.OK)

    def _refuse(self, peer: str, highest: int) -> None:
        with contextlib.suppress(PeerDown):
            self.ctx.link.send(peer, wire.ACK, (highest, highest, wire.STALE, self.rlog.id))

    async def _handshake(self, peer: str, epoch: int) -> None:
        rlog = self.rlog
        lg = rlog.log
        try:
            mine = rlog.checkpoints.latest
            raw = await self.ctx.link.call(peer, wire.END_FOR_EPOCH,
                                           wire.dumps({"log": rlog.id, "epoch": mine}),
                                           timeout=HANDSHAKE_TIMEOUT)
            answer = wire.loads(raw)
            their_epoch, their_end = int(answer["epoch"]), int(answer["end"])
            if (int(answer["leader_epoch"]) != epoch or epoch < rlog.highest_epoch
                    or rlog.leading is not None or rlog.closed):
                return  # it no longer leads that epoch (or this node does): start again
            if their_epoch < 0:
                target = 0  # nothing here is known to the leader
            else:
                own = rlog.checkpoints.end_for(their_epoch, lg.next_offset)[1]
                target = min(their_end, own if own >= 0 else 0)
            if target < lg.next_offset:
                log.info("replica of %s: cutting offsets %d..%d (not in the log of %s, "
                         "epoch %d)", rlog.id, target, lg.next_offset - 1, peer, epoch)
                await truncate(lg, target)
                rlog.checkpoints.truncate_from(lg.next_offset)
                rlog.high_watermark = min(rlog.high_watermark, lg.next_offset)
            self.validated, self.source = epoch, peer
            self.ack(peer, epoch, wire.MISMATCH)  # send me everything from my end
        except (PeerDown, CallError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.info("replica of %s: epoch check with %s failed (retried at its next "
                     "append): %s", rlog.id, peer, exc)
        except StoreUnavailable as exc:
            log.warning("replica of %s cannot truncate: %s", rlog.id, exc)
        finally:
            self.busy = False

    def ack(self, peer: str, epoch: int, code: int) -> None:
        """Tell ``peer`` where this log is durable, once it is (``code``: OK, or
        MISMATCH: send from there)."""
        self._pending = (peer, epoch, code)
        if self._acker is None:
            self._acker = self.ctx.spawn(self._send_acks())

    async def _send_acks(self) -> None:
        lg = self.rlog.log
        try:
            while self._pending is not None:
                peer, epoch, code = self._pending
                self._pending = None
                await lg.sync()
                if self.rlog.closed:
                    return
                with contextlib.suppress(PeerDown):
                    self.ctx.link.send(peer, wire.ACK, (epoch, lg.durable_offset, code,
                                                        self.rlog.id))
        except StoreUnavailable as exc:
            log.warning("replica of %s cannot fsync: %s", self.rlog.id, exc)
        finally:
            self._acker = None

    def answer_end(self, asked: int) -> dict[str, Any]:
        """(as the leader) ``end_for_epoch``'s answer."""
        e, end = self.rlog.checkpoints.end_for(asked, self.rlog.log.next_offset)
        return {"epoch": e, "end": end, "leader_epoch": self.rlog.epoch}
