"""Persistent messages of durable queues in one shared segment log (group commit).

One log serves every durable queue of the broker, so a message routed to several durable
queues is written once and one fsync covers every queue. Records:

* ``E`` enqueue: vhost, the durable queue names, exchange+routing key, raw header, body;
* ``d`` delivered (first deliveries of entries: they come back ``redelivered`` after a crash);
* ``a`` forget (acked, dropped, dead-lettered elsewhere, purged, deleted).

``d`` and ``a`` carry every offset one queue marked during one event-loop pass: marks are
collected in memory and written as one record per queue just before the pass's records
go to the OS (``write_out_now``, which runs before any delivery or confirm leaves) and
before every fsync round. Logs written by older versions hold ``D``/``A`` records with a
single offset; recovery reads both.

A head segment is deleted once every enqueue in it is forgotten. A segment behind a
live one is rewritten by ``store.reclaim.Reclaimer`` once less than half of it is live:
live enqueues and the marks still needed stay at their offsets, the rest goes (so one
parked message no longer pins every acked segment after it). ``refs`` (offset -> record
size and queues still holding it) and ``live`` (segment -> live enqueue bytes) are what
both need (rebuilt at start-up by ``durable_recovery.py``). Publisher confirms wait
for ``sync`` through ``SyncWaiters``: one fsync round for everyone who asked since the
last one.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from smartbroker.broker import confirm_rounds, durable_recovery
from smartbroker.broker.confirm_rounds import Waiter as SyncWaiter
from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.store.api import StoreUnavailable
from smartbroker.store.executors import Executors
from smartbroker.store.log import SegmentLog
from smartbroker.store.reclaim import Reclaimer

log = logging.getLogger("smartbroker.store")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_ack = struct.Struct("<cQ")
MARK_DELIVERED, MARK_FORGET = b"d", b"a"
# ``z`` + a reason code: dead-lettered at-least-once, held until its targets confirm
# (queues/quorum_dlx.py); replay hands such entries back to the dead-letter stage
MARK_DEAD = b"z"
DEAD_REASONS = {"rejected": b"r", "expired": b"x", "maxlen": b"m", "delivery_limit": b"l"}
_DEAD_BY_CODE = {code: reason for reason, code in DEAD_REASONS.items()}


def _name(value: str) -> bytes:
    raw = value.encode()
    return _u16.pack(len(raw)) + raw


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    (n,) = _u16.unpack_from(data, pos)
    return data[pos + 2:pos + 2 + n].decode(), pos + 2 + n


def enqueue_prefix(vhost: str, queues: tuple[str, ...] | list[str]) -> bytes:
    """The start of an ``E`` record: the same for every message to the same queues."""
    return b"".join((b"E", _name(vhost), _u16.pack(len(queues)), *map(_name, queues)))


def encode_enqueue(vhost: str, queues: tuple[str, ...] | list[str], msg: Message,
                   prefix: bytes | None = None) -> bytes:
    ex_rk, header = msg.exchange_rk_ss, msg.header_payload
    return b"".join((prefix or enqueue_prefix(vhost, queues), _u16.pack(len(ex_rk)), ex_rk,
                     _u32.pack(len(header)), header, msg.body))


def decode_enqueue(data: bytes) -> tuple[str, list[str], Message]:
    vhost, pos = _read_name(data, 1)
    (count,) = _u16.unpack_from(data, pos)
    pos += 2
    queues = []
    for _ in range(count):
        name, pos = _read_name(data, pos)
        queues.append(name)
    (n,) = _u16.unpack_from(data, pos)
    ex_rk = data[pos + 2:pos + 2 + n]
    pos += 2 + n
    (h,) = _u32.unpack_from(data, pos)
    header = data[pos + 4:pos + 4 + h]
    body = data[pos + 4 + h:]
    exchange, routing_key = codec.decode_route(ex_rk)  # publish kept non-UTF-8 bytes
    return vhost, queues, Message(exchange, routing_key, ex_rk, header, body)


def encode_mark(kind: bytes, offset: int, vhost: str, queue: str) -> bytes:
    """The single-offset ``D``/``A`` record of older logs (kept so tests can write one)."""
    return _ack.pack(kind, offset) + _name(vhost) + _name(queue)


def decode_mark(data: bytes) -> tuple[bytes, int, str, str]:
    kind, offset = _ack.unpack_from(data)
    vhost, pos = _read_name(data, _ack.size)
    queue, _ = _read_name(data, pos)
    return kind, offset, vhost, queue


def encode_marks(kind: bytes, vhost: str, queue: str, offsets: list[int]) -> bytes:
    """A ``d``/``a`` record: one queue's marks of one loop pass."""
    return b"".join((kind, _name(vhost), _name(queue), _u32.pack(len(offsets)),
                     struct.pack(f"<{len(offsets)}Q", *offsets)))


def dead_mark(reason: str) -> bytes:
    """The mark kind (two bytes) of an at-least-once dead-letter for ``reason``."""
    return MARK_DEAD + DEAD_REASONS.get(reason, b"r")


def decode_dead(data: bytes) -> tuple[str, str, str, tuple[int, ...]]:
    """A ``z`` record -> (reason, vhost, queue, offsets)."""
    reason = _DEAD_BY_CODE.get(data[1:2], "rejected")
    _, vhost, queue, offsets = decode_marks(data[1:])
    return reason, vhost, queue, offsets


def decode_marks(data: bytes) -> tuple[bytes, str, str, tuple[int, ...]]:
    """Either record format -> (``D``/``A``, vhost, queue, offsets)."""
    kind = data[:1]
    if kind in (b"D", b"A"):
        kind, offset, vhost, queue = decode_mark(data)
        return kind, vhost, queue, (offset,)
    vhost, pos = _read_name(data, 1)
    queue, pos = _read_name(data, pos)
    (count,) = _u32.unpack_from(data, pos)
    offsets = struct.unpack_from(f"<{count}Q", data, pos + 4)
    return kind.upper(), vhost, queue, offsets


class MessageStore:
    def __init__(self, directory: Path, fsync: str = "batch",
                 segment_bytes: int = 64 << 20, executors: Executors | None = None) -> None:
        self.log = SegmentLog(directory, fsync=fsync, segment_bytes=segment_bytes,
                              executor=executors.fsync if executors is not None else None,
                              handles=executors.handles if executors is not None else None)
        self._live: defaultdict[int, int] = defaultdict(int)  # segment base -> live enqueue bytes
        self._refs: dict[int, int] = {}  # enqueue offset -> record size << 16 | queues holding it
        self.reclaimer = Reclaimer(self.log, self._refs, self._live, (decode_marks, encode_marks),
                                   executor=executors.compact if executors is not None else None)
        # confirms: the logs each waiter (a channel, a peer's forwarded publishes) asked
        # for since its last release, and the one task serving each waiter
        self._wanted: dict[SyncWaiter, set[Any]] = {}
        self._serving: dict[SyncWaiter, asyncio.Task[None]] = {}
        self._sync_failure_logged = -1.0
        # cluster mode: claims of forwarded publishes made since the last request_sync
        # (cluster/forwarding_publish.py): bound to their publisher by the next one
        self.claims: set[Any] = set()
        self.write_out_pending = False
        self.failed = False
        self._prefixes: dict[tuple[str, tuple[str, ...]], bytes] = {}  # E record starts
        self._marks: dict[tuple[bytes, str, str], list[int]] = {}  # this pass's d/a marks
        self.undecodable_properties = 0  # recovered records whose properties could not be read

    # -- writing ---------------------------------------------------------------------------
    def enqueue(self, vhost: str, queues: tuple[str, ...], msg: Message) -> int:
        key = (vhost, queues)
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) >= 4096:
                self._prefixes.clear()
            prefix = self._prefixes[key] = enqueue_prefix(vhost, queues)
        data = encode_enqueue(vhost, queues, msg, prefix)
        offset = self.log.append(data, int(time.time() * 1000))
        self._schedule_write_out()
        self._refs[offset] = len(data) << 16 | len(queues)
        base = self.log.segment_of(offset)
        if base is not None:
            self._live[base] += len(data)
        return offset

    def delivered(self, vhost: str, queue: str, offset: int) -> None:
        self._mark(MARK_DELIVERED, vhost, queue, offset)

    def forget(self, vhost: str, queue: str, offset: int) -> None:
        self._mark(MARK_FORGET, vhost, queue, offset)

    def dead_lettered(self, vhost: str, queue: str, offset: int, reason: str) -> None:
        """At-least-once: the message waits for its dead-letter targets (a restart puts
        it back there, not in the queue); ``forget`` follows once they confirmed."""
        self._mark(dead_mark(reason), vhost, queue, offset)

    def _mark(self, kind: bytes, vhost: str, queue: str, offset: int) -> None:
        pending = self._marks.get((kind, vhost, queue))
        if pending is not None:
            pending.append(offset)
            return
        self._marks[(kind, vhost, queue)] = [offset]
        if not self._schedule_write_out():
            self._write_marks()  # no event loop (tools, tests): write at once

    def _write_marks(self) -> None:
        """This pass's marks into the log, one record per queue and kind; before the log's
        buffer goes to the OS or is fsynced, and before segments are reclaimed."""
        marks, self._marks = self._marks, {}
        emptied = False
        for (kind, vhost, queue), offsets in marks.items():
            try:
                self.log.append(encode_marks(kind, vhost, queue, offsets))
            except StoreUnavailable:
                log.error("message store unavailable: %d settlement record(s) not written",
                          len(offsets))
            if kind is MARK_FORGET:
                emptied = self._release(offsets) or emptied
                self.reclaimer.schedule()
        if emptied:
            self._reclaim()

    def _release(self, offsets: list[int]) -> bool:
        """Count forgotten enqueues off their segments; True if a segment has none left."""
        live, refs, segment_of = self._live, self._refs, self.log.segment_of
        emptied = False
        for offset in offsets:
            ref = refs.get(offset)
            if ref is None:
                continue
            ref -= 1
            if ref & 0xFFFF:
                refs[offset] = ref  # another queue still holds it
                continue
            del refs[offset]
            base = segment_of(offset)
            if base is None:
                continue
            left = live[base] - (ref >> 16)
            if left > 0:
                live[base] = left
            else:
                live.pop(base, None)
                emptied = True
        return emptied

    def _schedule_write_out(self) -> bool:
        """Hand this loop pass's records to the OS at its end, so a kill -9 loses no
        processed ack or publish (fsync, for power loss, stays with group commit).
        False outside an event loop."""
        if self.write_out_pending:
            return True
        loop = asyncio._get_running_loop()
        if loop is None:
            return False
        self.write_out_pending = True
        loop.call_soon(self.write_out_now)
        return True

    def write_out_now(self) -> None:
        if self.write_out_pending:
            self.write_out_pending = False
            if self._marks:
                self._write_marks()
            self.log.write_out()

    def _reclaim(self) -> None:
        """Delete closed head segments that hold no live enqueue."""
        for seg in self.log.segments():
            if seg.active or self._live.get(seg.base_offset):
                return
            self.log.delete_segment(seg.base_offset)
            self.reclaimer.forget_segment(seg.base_offset)

    def load(self, offset: int) -> Message:
        data = self.log.read(offset)
        if data is None:
            raise KeyError(f"message at offset {offset} is missing from the store")
        return decode_enqueue(data)[2]

    # -- group commit for confirms --------------------------------------------------------
    def request_sync(self, waiter: SyncWaiter, logs: tuple[Any, ...] = ()) -> None:
        """Call ``waiter.synced`` once ``logs`` (default: the message log) are fsynced."""
        wanted = self._wanted.get(waiter)
        if wanted is None:
            self._wanted[waiter] = wanted = set()
        wanted.update(logs or (self.log,))
        if self.claims:  # cluster: forwarded publishes a remote leader may refuse alone
            self._bind_claims(waiter, logs)
        if waiter not in self._serving:
            self._serving[waiter] = asyncio.get_running_loop().create_task(self._serve(waiter))

    def _bind_claims(self, waiter: SyncWaiter, logs: tuple[Any, ...]) -> None:
        """Tell each claim among ``logs`` (made by the publish just routed) whom to nack if
        its leader refuses it: this waiter's publish, alone. A claim no sync asked for
        (a publish without confirms) is dropped here or at the end of the loop pass."""
        claims, self.claims = self.claims, set()
        nack = getattr(waiter, "nack_waiting", None)
        if nack is not None:
            mark = waiter.sync_mark()
            for lg in logs:
                if lg in claims:
                    lg.bind(nack, mark)

    async def _serve(self, waiter: SyncWaiter) -> None:
        """Release ``waiter`` round after round, each time once the logs it asked for are
        synced (``confirm_rounds``: a replicated log's commit overlaps the next rounds).
        One task per waiter, not one for the node: a log that cannot commit (a
        replicated queue short of in-sync replicas) holds back only the waiters that
        wrote to it, never every other channel's confirms. Each log's own group commit
        still shares one fsync among every waiter asking at the same time."""
        try:
            await confirm_rounds.serve(waiter, lambda: self._next_round(waiter),
                                       self._sync_failed)
        finally:
            del self._serving[waiter]

    def _next_round(self, waiter: SyncWaiter) -> set[Any] | None:
        logs = self._wanted.pop(waiter, None)
        if logs and self._marks:
            self._write_marks()  # a transaction's acks are covered by its fsync
        return logs

    def _sync_failed(self, exc: BaseException) -> None:
        """One log line per failure and second, however many publishers it nacks."""
        now = time.monotonic()
        if now - self._sync_failure_logged >= 1.0:
            self._sync_failure_logged = now
            what = "fsync failed" if isinstance(exc, StoreUnavailable) else "sync failed"
            log.error("%s, nacking publishers waiting for it: %s", what, exc)

    # -- recovery (durable_recovery.py) ----------------------------------------------------
    def recover(self) -> dict[tuple[str, str], list[durable_recovery.RecoveredEntry]]:
        """Every live (queue -> entries) in the log, in enqueue order, bodies left on disk."""
        return durable_recovery.recover(self)

    def drop_unclaimed(self, claimed: set[tuple[str, str]],
                       recovered: dict[tuple[str, str], list[durable_recovery.RecoveredEntry]]) -> None:
        """Forget entries of queues that no longer exist (deleted while the broker was down)."""
        for key, entries in recovered.items():
            if key not in claimed:
                for entry in entries:
                    self.forget(key[0], key[1], entry.offset)

    async def aclose(self) -> None:
        await self.reclaimer.aclose()
        self._write_marks()
        await self.log.aclose()

    def close(self) -> None:
        self.reclaimer.close()
        self._write_marks()
        self.log.close()

