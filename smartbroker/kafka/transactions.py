"""The transaction coordinator (KIP-98): producer ids, and each transactional id's state.

This node coordinates every transactional id. What it keeps per transactional id is
Kafka's ``TransactionMetadata``: producer id and epoch (and the previous ones, so that a
retried epoch bump is recognised), timeout, state, the partitions and groups in the
ongoing transaction, and the offsets its TxnOffsetCommits hold until the commit. The
state is durable: every transition appends that id's record to a keyed log in the data
directory (txn_log.py, Kafka's ``__transaction_state`` in small), so a restart keeps
fencing and open transactions; a transaction caught between PrepareCommit/PrepareAbort
and its markers is completed at load. Producer ids are handed out from blocks of
``ID_BLOCK`` whose end is fsynced before any id of the block is used (Kafka's
ProducerIdManager), so an id is never given twice, across restarts too.

Markers are written through ``MarkerWriter`` (txn_api.py appends the control batches to
the stream partitions and returns what to wait for before answering), so Prepare* states
last one call: EndTxn answers once every marker is durable. A transaction older than its
timeout is aborted by a timer (``loop.call_later``, never blocking), with the epoch bumped
first so the producer that let it time out is fenced, as Kafka's
``abortTimedOutTransactions`` does. Errors are Kafka's names (``ErrorCode[name]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smartbroker.kafka.txn_log import (
    BLOCK_KEY,
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    Partition,
    TxnMetadata,
    TxnOffset,
    TxnStateLog,
)

log = logging.getLogger("smartbroker.kafka")
ID_BLOCK = 1000
MAX_TIMEOUT_MS = 900_000  # Kafka's transaction.max.timeout.ms default
TRANSACTIONAL_ID_EXPIRATION_MS = 7 * 86_400_000  # Kafka's transactional.id.expiration.ms
MAX_EPOCH = 32767  # Short.MAX_VALUE: an epoch at MAX_EPOCH - 1 is exhausted
# (partitions, producer id, epoch, commit) -> something to await before answering, or None
MarkerWriter = Callable[[list[Partition], int, int, bool], Any]
# (group, {(topic, partition): (offset, epoch, metadata)}) -> None: they become visible
OffsetApplier = Callable[[str, dict[Partition, TxnOffset]], None]


class TxnError(Exception):
    """A refusal; ``error`` is Kafka's error name."""

    def __init__(self, error: str, message: str = "") -> None:
        super().__init__(message or error)
        self.error = error


def _now() -> int:
    return int(time.time() * 1000)


def _exhausted(epoch: int) -> bool:
    return epoch >= MAX_EPOCH - 1


class TransactionCoordinator:
    """Producer ids and transactional ids, durable in ``directory`` (txn_log.py; None:
    in memory only)."""

    def __init__(self, directory: Path | None, markers: MarkerWriter,
                 apply_offsets: OffsetApplier, max_timeout_ms: int = MAX_TIMEOUT_MS,
                 fsync: str = "batch", executor: Any = None, handles: Any = None) -> None:
        self.markers = markers
        self.apply_offsets = apply_offsets
        self.max_timeout_ms = max_timeout_ms
        self.txns: dict[str, TxnMetadata] = {}
        self._next_id = 0
        self._block_end = 0  # ids below it are reserved (persisted)
        # cluster mode (handlers.attach_peers): this node's broker id << 32 is added to the
        # ids it hands out, so two nodes never give two producers the same id
        self.pid_base = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._by_pid: dict[int, str] = {}  # producer id -> its transactional id
        self._durable = directory is None  # False: ids cannot be reserved durably
        try:
            self.state = TxnStateLog(directory, fsync, executor, handles)
            self._durable = True
        except Exception as exc:  # refusing to start would lose every topic
            log.error("Kafka transaction state in %s unusable (%s): kept in memory, no "
                      "producer ids handed out", directory, exc)
            self.state = TxnStateLog(None)
        self._load(self.state.records)

    # -- persistence -----------------------------------------------------------------------
    def _load(self, records: dict[bytes, Any]) -> None:
        for key, value in records.items():
            try:
                if key == BLOCK_KEY:
                    self._next_id = self._block_end = int(value["block_end"])
                else:
                    tid = key.decode()
                    self.txns[tid] = TxnMetadata.from_json(tid, value)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("Kafka transaction state record %r unreadable: %s", key, exc)
        self._by_pid = {m.producer_id: tid for tid, m in self.txns.items()}

    def recover(self) -> None:
        """Finish what a crash interrupted: Prepare* transactions get their markers, and
        open ones get their timeout timer back (called once the streams are loaded)."""
        self.retry_prepared()
        for meta in list(self.txns.values()):
            if meta.state == ONGOING:
                self._schedule_timeout(meta)

    def retry_prepared(self) -> None:
        """Write the markers of transactions left prepared (a crash, or a marker the
        disk refused): at load and on every maintenance pass."""
        for meta in list(self.txns.values()):
            if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
                with contextlib.suppress(TxnError):  # logged; the next pass retries
                    self._complete(meta, meta.state == PREPARE_COMMIT)

    def _save(self, meta: TxnMetadata) -> None:
        """Record ``meta``'s new state (one append; a disk that refuses leaves it in
        memory with a warning: the log reports it)."""
        try:
            self.state.put(meta.transactional_id.encode(), meta.to_json())
        except Exception as exc:
            log.warning("Kafka transaction state of %r not recorded: %s",
                        meta.transactional_id, exc)

    def new_producer_id(self) -> int:
        """A producer id never handed out before (on this data directory)."""
        if self._next_id >= self._block_end:
            # durable before any id of it is used, or ids could be handed out twice
            if not self._durable:
                raise TxnError("COORDINATOR_NOT_AVAILABLE", "producer ids cannot be recorded")
            end = self._next_id + ID_BLOCK
            try:
                self.state.put(BLOCK_KEY, {"block_end": end}, durable=True)
            except Exception as exc:
                log.warning("Kafka producer-id block not recorded: %s", exc)
                raise TxnError("COORDINATOR_NOT_AVAILABLE", str(exc)) from None
            self._block_end = end
        pid = self._next_id
        self._next_id += 1
        return self.pid_base + pid

    # -- InitProducerId --------------------------------------------------------------------
    def init_producer_id(self, txn_id: str | None, timeout_ms: int, expected_pid: int = -1,
                         expected_epoch: int = -1) -> tuple[int, int]:
        """(producer id, epoch); raises TxnError. Kafka's handleInitProducerId."""
        if txn_id is None:
            return self.new_producer_id(), 0  # idempotent only: always a fresh id
        if not txn_id:
            raise TxnError("INVALID_REQUEST", "empty transactional id")
        if not 0 < timeout_ms <= self.max_timeout_ms:
            raise TxnError("INVALID_TRANSACTION_TIMEOUT",
                           f"transaction timeout {timeout_ms} ms is not in 1..{self.max_timeout_ms}")
        expected = None if expected_pid == -1 and expected_epoch == -1 else (expected_pid,
                                                                               expected_epoch)
        meta = self.txns.get(txn_id)
        if meta is None:
            meta = self.txns[txn_id] = TxnMetadata(txn_id, self.new_producer_id(), -1, timeout_ms)
        if expected is not None and not (
                meta.epoch == -1 or expected[0] == meta.producer_id
                or (expected[0] == meta.last_producer_id and _exhausted(expected[1]))):
            raise TxnError("PRODUCER_FENCED", "producer id does not match the transactional id")
        if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
            raise TxnError("CONCURRENT_TRANSACTIONS")
        if meta.state == ONGOING:
            # Kafka: fence the current producer (bump), abort its transaction, and have
            # the new one retry, which bumps the epoch a second time
            self._fence_and_abort(meta)
            raise TxnError("CONCURRENT_TRANSACTIONS", "aborting the previous producer's transaction")
        if _exhausted(meta.epoch) and (expected is None or expected[1] == meta.epoch):
            meta.last_producer_id, meta.last_epoch = meta.producer_id, meta.epoch
            meta.producer_id, meta.epoch = self.new_producer_id(), 0
        elif expected is None:
            meta.epoch, meta.last_epoch = meta.epoch + 1, -1
        elif meta.epoch == -1 or expected[1] == meta.epoch:
            meta.epoch, meta.last_epoch = meta.epoch + 1, meta.epoch
        elif expected[1] != meta.last_epoch:  # else a retried bump: the same epoch again
            raise TxnError("PRODUCER_FENCED", f"epoch {expected[1]} is not the current one")
        self._by_pid[meta.producer_id] = txn_id
        meta.updated_ms = _now()
        meta.timeout_ms = timeout_ms
        meta.state = EMPTY
        meta.partitions.clear()
        meta.groups.clear()
        meta.offsets.clear()
        self._save(meta)
        return meta.producer_id, meta.epoch

    # -- the transaction -------------------------------------------------------------------
    def _current(self, txn_id: str | None, pid: int, epoch: int) -> TxnMetadata:
        """The metadata a request from (pid, epoch) may act on; Kafka's checks, in order."""
        if not txn_id:
            raise TxnError("INVALID_REQUEST", "no transactional id")
        meta = self.txns.get(txn_id)
        if meta is None or meta.producer_id != pid:
            raise TxnError("INVALID_PRODUCER_ID_MAPPING",
                           f"producer id {pid} is not the one of transactional id {txn_id!r}")
        if meta.epoch != epoch:
            raise TxnError("PRODUCER_FENCED", f"epoch {epoch} is not the current {meta.epoch}")
        if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
            raise TxnError("CONCURRENT_TRANSACTIONS")
        meta.updated_ms = _now()
        return meta

    def add_partitions(self, txn_id: str, pid: int, epoch: int,
                       partitions: list[Partition]) -> None:
        meta = self._current(txn_id, pid, epoch)
        if meta.state == ONGOING and set(partitions) <= meta.partitions:
            return
        self._begin(meta)
        meta.partitions.update(partitions)
        self._save(meta)

    def add_offsets(self, txn_id: str, pid: int, epoch: int, group: str) -> None:
        meta = self._current(txn_id, pid, epoch)
        if meta.state == ONGOING and group in meta.groups:
            return
        self._begin(meta)
        meta.groups.add(group)
        self._save(meta)

    def txn_offset_commit(self, txn_id: str, pid: int, epoch: int, group: str,
                          offsets: dict[Partition, TxnOffset]) -> None:
        """Hold the offsets until the transaction commits (dropped if it aborts)."""
        meta = self._current(txn_id, pid, epoch)
        if meta.state != ONGOING or group not in meta.groups:
            raise TxnError("INVALID_TXN_STATE", f"group {group!r} was not added to the "
                           "transaction (AddOffsetsToTxn)")
        meta.offsets.setdefault(group, {}).update(offsets)
        self._save(meta)

    def end_txn(self, txn_id: str, pid: int, epoch: int, commit: bool) -> Any:
        """Commit or abort; returns what to await (the markers' durability) or None."""
        meta = self.txns.get(txn_id) if txn_id else None
        if meta is None or meta.producer_id != pid:
            raise TxnError("INVALID_PRODUCER_ID_MAPPING")
        if meta.epoch != epoch:
            raise TxnError("PRODUCER_FENCED", f"epoch {epoch} is not the current {meta.epoch}")
        done = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        if meta.state == done:
            return None  # a retry of what already completed
        if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
            if meta.state == (PREPARE_COMMIT if commit else PREPARE_ABORT):
                raise TxnError("CONCURRENT_TRANSACTIONS")
            raise TxnError("INVALID_TXN_STATE")
        if meta.state != ONGOING:
            raise TxnError("INVALID_TXN_STATE", f"no transaction to {'commit' if commit else 'abort'}"
                           f" (state {meta.state})")
        return self._complete(meta, commit)

    def _begin(self, meta: TxnMetadata) -> None:
        if meta.state != ONGOING:
            meta.state = ONGOING
            meta.partitions.clear()
            meta.groups.clear()
            meta.offsets.clear()
            meta.started_ms = int(time.time() * 1000)
            self._schedule_timeout(meta)

    def _complete(self, meta: TxnMetadata, commit: bool) -> Any:
        """Prepare (durably), write the markers, apply or drop the offsets, complete."""
        self._cancel_timeout(meta.transactional_id)
        meta.state = PREPARE_COMMIT if commit else PREPARE_ABORT
        self._save(meta)
        waiting = None
        if meta.partitions:
            try:
                waiting = self.markers(sorted(meta.partitions), meta.producer_id, meta.epoch,
                                       commit)
            except Exception as exc:  # stays prepared: retry_prepared writes them later
                log.warning("markers of the transaction of %r not written: %s",
                            meta.transactional_id, exc)
                raise TxnError("COORDINATOR_NOT_AVAILABLE", str(exc)) from None
        if commit:
            for group, offsets in meta.offsets.items():
                self.apply_offsets(group, offsets)
        meta.state = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        meta.updated_ms = _now()
        meta.partitions.clear()
        meta.groups.clear()
        meta.offsets.clear()
        self._save(meta)
        return waiting

    def _fence_and_abort(self, meta: TxnMetadata) -> Any:
        """Bump the epoch (the old producer is fenced), then abort with the new epoch."""
        if _exhausted(meta.epoch):  # no room to bump: abort with the current epoch
            return self._complete(meta, False)
        meta.epoch, meta.last_epoch = meta.epoch + 1, -1
        return self._complete(meta, False)

    # -- timeouts --------------------------------------------------------------------------
    def _schedule_timeout(self, meta: TxnMetadata) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests of the state machine): expire_now()
            return
        self._cancel_timeout(meta.transactional_id)
        left = meta.started_ms + meta.timeout_ms - time.time() * 1000
        txn_id, pid, epoch = meta.transactional_id, meta.producer_id, meta.epoch
        self._timers[txn_id] = loop.call_later(max(left, 0) / 1000, self._expire, txn_id,
                                               pid, epoch)

    def _cancel_timeout(self, txn_id: str) -> None:
        timer = self._timers.pop(txn_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, txn_id: str, pid: int, epoch: int) -> None:
        self._timers.pop(txn_id, None)
        meta = self.txns.get(txn_id)
        if meta is None or meta.state != ONGOING or (meta.producer_id, meta.epoch) != (pid, epoch):
            return
        log.info("Kafka transaction of %r (producer %d epoch %d) timed out after %d ms: aborted",
                 txn_id, pid, epoch, meta.timeout_ms)
        try:
            waiting = self._fence_and_abort(meta)
        except Exception:  # a marker could not be written: retried by the next call
            log.exception("aborting the timed-out transaction of %r failed", txn_id)
            return
        if asyncio.isfuture(waiting):
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())

    def expire_now(self, now_ms: int | None = None) -> list[str]:
        """Abort every transaction past its timeout now (tests, and without a loop)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        expired = [m for m in self.txns.values()
                   if m.state == ONGOING and m.started_ms + m.timeout_ms <= now]
        for meta in expired:
            self._expire(meta.transactional_id, meta.producer_id, meta.epoch)
        return [m.transactional_id for m in expired]

    def lookup(self, pid: int) -> tuple[int, set[Partition] | None] | None:
        """(current epoch, partitions of its ongoing transaction or None) of producer
        ``pid``, None for a producer without a transactional id: Produce checks that a
        transactional batch's partition was added (Kafka's transaction verification)."""
        txn_id = self._by_pid.get(pid)
        meta = self.txns.get(txn_id) if txn_id is not None else None
        if meta is None or meta.producer_id != pid:
            return None
        return meta.epoch, (meta.partitions if meta.state == ONGOING else None)

    def expire_ids(self, now_ms: int | None = None,
                   idle_ms: int = TRANSACTIONAL_ID_EXPIRATION_MS) -> list[str]:
        """Forget transactional ids unused for ``idle_ms`` with no transaction open (Kafka's
        transactional.id.expiration.ms): their next InitProducerId starts afresh."""
        now = _now() if now_ms is None else now_ms
        gone = [tid for tid, m in self.txns.items()
                if m.state not in (ONGOING, PREPARE_COMMIT, PREPARE_ABORT)
                and m.updated_ms < now - idle_ms]
        for tid in gone:
            meta = self.txns.pop(tid)
            if self._by_pid.get(meta.producer_id) == tid:
                del self._by_pid[meta.producer_id]
            try:
                self.state.put(tid.encode(), None)
            except Exception as exc:
                log.warning("expiry of transactional id %r not recorded: %s", tid, exc)
        return gone

    def pending_offset(self, group: str, topic: str, partition: int) -> bool:
        """Whether an ongoing transaction holds an offset of ``group`` for the partition
        (OffsetFetch with require_stable: Kafka's UNSTABLE_OFFSET_COMMIT)."""
        key = (topic, partition)
        return any(m.state == ONGOING and key in m.offsets.get(group, ())
                   for m in self.txns.values())

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.state.close()
