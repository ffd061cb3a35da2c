"""Produce's producer-id checks: retries answered with their original offset, sequences,
epochs and transactional writes, with Kafka's rules (``queues/partition_producers.py``).

Kafka validates a partition's batches against its producer state before appending any
(``UnifiedLog.analyzeAndValidateProducerState``): a retry of one of a producer's last five
batches makes the whole append a duplicate (nothing stored, the original base offset
answered, no error); any refusal refuses the partition's data. A transactional batch must
belong to its producer's ongoing transaction with this partition added (Kafka's
transaction verification, 3.6+), else INVALID_TXN_STATE. Control batches only come from
the coordinator (a client's is INVALID_RECORD, as Kafka's LogValidator says).

The state is updated *before* the append (base offsets are known: the partition's next
offset), so that the readers the append wakes already see the open transaction and stop
at the last stable offset.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues import producer_state as ps
from smartbroker.queues import txn_journal
from smartbroker.queues.batch_header import BatchHeader
from smartbroker.queues.partition_producers import PartitionProducers, ProducerStateError

if TYPE_CHECKING:
    from smartbroker.kafka.batches import Batch

log = logging.getLogger("smartbroker.kafka")
# producer id -> (its transaction's producer epoch, partitions) if it is ongoing, else its
# current epoch and None: what the transaction coordinator knows (transactions.py)
TxnLookup = Callable[[int], "tuple[int, set[tuple[str, int]] | None] | None"]


class Refused(Exception):
    """The partition's data is refused: Kafka's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def producers_of(queue: Any) -> ps.StreamProducers:
    """The stream's producer state, made on first use, when its snapshot file is written
    at once: that file is what tells the next load to rebuild the state (a stream that
    never had a producer id loads without scanning anything)."""
    state = queue.txns
    if state is None:
        state = queue.txns = ps.StreamProducers(len(queue.partitions))
        try:
            ps.save(queue.directory, state, queue.partitions.next_offsets())
        except OSError as exc:  # kept in memory; the next maintenance pass saves it
            log.warning("producer state of stream %r not saved: %s", queue.name, exc)
    if state.journal is None and queue.stream.compact:  # markers not in its log
        txn_journal.attach(queue, state)
    return state


def admit(queue: Any, topic: str, partition: int, batches: list[Batch],
          txn_lookup: TxnLookup) -> int | None:
    """Check ``batches`` of ``partition`` and record them in
    the producer state at the offsets they are about to get. Returns the original base
    offset when they are a retry (store nothing), else None (store them). Raises
    Refused with the state untouched."""
    if all(b.header.producer_id < 0 for b in batches):
        if any(b.control for b in batches):
            raise Refused(ErrorCode.INVALID_RECORD, "control batches come from the coordinator")
        return None  # the plain producer: no state at all
    part = producers_of(queue)[partition]
    headers = [b.header for b in batches]  # unpacked once, by batches.split
    for h in headers:
        if h.producer_id >= 0 and not h.control:
            dup = part.duplicate(h)
            if dup is not None:
                return dup.first_offset
    base = queue.partitions[partition].next_offset
    if len(headers) == 1:  # what clients send: checked before anything changes
        try:
            _check(part, headers[0], topic, partition, txn_lookup)
        except ProducerStateError as exc:
            raise Refused(ErrorCode[exc.error], str(exc)) from None
        part.appended(headers[0], base)
        return None
    saved = {h.producer_id: (copy.deepcopy(part.producers.get(h.producer_id)),
                             copy.deepcopy(part.open.get(h.producer_id)))
             for h in headers if h.producer_id >= 0}
    try:
        for h in headers:
            _check(part, h, topic, partition, txn_lookup)
            part.appended(h, base)
            base += h.last_offset_delta + 1
    except (Refused, ProducerStateError) as exc:
        for pid, (entry, ranges) in saved.items():  # leave the state as it was
            _restore(part.producers, pid, entry)
            _restore(part.open, pid, ranges)
        if isinstance(exc, ProducerStateError):
            raise Refused(ErrorCode[exc.error], str(exc)) from None
        raise
    return None


def _restore(table: dict[int, Any], key: int, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _check(part: PartitionProducers, h: BatchHeader, topic: str, partition: int,
           txn_lookup: TxnLookup) -> None:
    if h.control:
        raise Refused(ErrorCode.INVALID_RECORD, "control batches come from the coordinator")
    if h.producer_id < 0:
        if h.transactional:
            raise Refused(ErrorCode.INVALID_RECORD, "a transactional batch needs a producer id")
        return
    if h.producer_epoch < 0 or h.base_sequence < 0:
        raise Refused(ErrorCode.INVALID_RECORD, f"producer {h.producer_id} batch without "
                      "epoch or sequence")
    part.check(h)
    if h.transactional:
        known = txn_lookup(h.producer_id)
        if known is not None and h.producer_epoch < known[0]:
            raise Refused(ErrorCode.INVALID_PRODUCER_EPOCH, f"producer {h.producer_id} epoch "
                          f"{h.producer_epoch} is fenced by epoch {known[0]}")
        if known is None or known[1] is None or (topic, partition) not in known[1] \
                or known[0] != h.producer_epoch:
            raise Refused(ErrorCode.INVALID_TXN_STATE, f"partition {topic}-{partition} is not "
                          f"in an ongoing transaction of producer {h.producer_id}")
