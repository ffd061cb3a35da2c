"""The transaction coordinator's durable state: a keyed log, one record per change.

Kafka keeps transaction state in the compacted ``__transaction_state`` topic; this is the
same idea on the broker's own segment log (``store/log.py``): each change of a
transactional id appends one record keyed by the id (the newest per key wins, an empty
payload deletes), so a change costs one buffered append, never a rewrite of every id and
never an fsync on the event loop. The record is handed to the OS at once (it survives a
crash of the process; the log's fsync policy covers power loss), except the producer-id
block, which is fsynced before any id of it is used. At load the newest record per key
is read and written compactly into a fresh log, swapped in by rename (a crash midway
leaves either the old or the new one complete).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.kafka")
BLOCK_KEY = b"\x00producer-id-block"
EMPTY, ONGOING = "Empty", "Ongoing"
PREPARE_COMMIT, PREPARE_ABORT = "PrepareCommit", "PrepareAbort"
COMPLETE_COMMIT, COMPLETE_ABORT = "CompleteCommit", "CompleteAbort"

Partition = tuple[str, int]  # (topic, partition)


class TxnOffset(NamedTuple):
    """A TxnOffsetCommit's partition, held until the commit: what OffsetCommit keeps
    (the offset, its leader epoch and metadata), so OffsetFetch answers the same."""

    offset: int
    epoch: int = -1
    metadata: str = ""


@dataclass
class TxnMetadata:
    """Kafka's TransactionMetadata: what is kept per transactional id, one record each."""

    transactional_id: str
    producer_id: int
    epoch: int
    timeout_ms: int
    state: str = EMPTY
    last_producer_id: int = -1
    last_epoch: int = -1
    partitions: set[Partition] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    offsets: dict[str, dict[Partition, TxnOffset]] = field(default_factory=dict)
    started_ms: int = -1
    updated_ms: int = -1  # last request or transition: what transactional-id expiry reads

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.producer_id, "epoch": self.epoch, "timeout": self.timeout_ms,
                "state": self.state, "last_pid": self.last_producer_id,
                "last_epoch": self.last_epoch, "partitions": sorted(self.partitions),
                "groups": sorted(self.groups), "started": self.started_ms,
                "updated": self.updated_ms,
                "offsets": {g: [[t, p, *o] for (t, p), o in sorted(offs.items())]
                            for g, offs in self.offsets.items()}}

    @classmethod
    def from_json(cls, txn_id: str, d: dict[str, Any]) -> TxnMetadata:
        return cls(txn_id, d["pid"], d["epoch"], d["timeout"], d["state"], d["last_pid"],
                   d["last_epoch"], {(t, p) for t, p in d["partitions"]}, set(d["groups"]),
                   # [t, p, offset, epoch, metadata]; [t, p, offset] before they were kept
                   {g: {(t, p): TxnOffset(*o) for t, p, *o in offs}
                    for g, offs in d["offsets"].items()},
                   d["started"], d.get("updated", -1))


class TxnStateLog:
    """Keyed JSON records under ``directory`` (None: nothing is kept)."""

    def __init__(self, directory: Path | None, fsync: str = "batch", executor: Any = None,
                 handles: Any = None) -> None:
        self.records: dict[bytes, Any] = {}  # what was loaded: key -> decoded payload
        self.log: SegmentLog | None = None
        if directory is None:
            return
        fresh = directory.with_name(directory.name + ".new")
        if not directory.exists() and fresh.exists():
            fresh.rename(directory)  # a crash between the two steps of the last swap
        if directory.exists():
            old = SegmentLog(directory, fsync=fsync, handles=handles)
            try:
                for rec in old.scan_records():
                    if rec.key is None:
                        continue
                    if rec.payload:
                        self.records[rec.key] = json.loads(rec.payload)
                    else:
                        self.records.pop(rec.key, None)
            except ValueError as exc:  # a record that is not JSON: keep what came before
                log.error("Kafka transaction state in %s partly unreadable: %s", directory, exc)
            finally:
                old.close()
        shutil.rmtree(fresh, ignore_errors=True)
        new = SegmentLog(fresh, fsync=fsync, segment_bytes=16 << 20, handles=handles)
        for key, value in self.records.items():
            new.append(json.dumps(value).encode(), None, key)
        new.flush()
        new.close()
        shutil.rmtree(directory, ignore_errors=True)
        fresh.rename(directory)
        self.log = SegmentLog(directory, fsync=fsync, segment_bytes=16 << 20, executor=executor,
                              handles=handles)

    def put(self, key: bytes, value: Any, durable: bool = False) -> None:
        """Record ``value`` (JSON) for ``key``, None deletes it; ``durable`` fsyncs now."""
        if self.log is None:
            return
        self.log.append(b"" if value is None else json.dumps(value).encode(), None, key)
        if durable:
            self.log.flush()
        else:
            self.log.write_out()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
