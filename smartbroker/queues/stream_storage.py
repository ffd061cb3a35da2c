"""Where a stream's logs live: one directory per stream under ``<data dir>/streams``.

The directory name is a digest of vhost and name (any queue name is a safe path), with a
``name`` file saying whose it is; each partition is a ``SegmentLog`` in ``p<N>`` and the
group offsets in ``offsets``. Without storage (a broker with no data directory, unit tests)
every log is a ``MemoryLog``. The logs share the broker's fsync threads and file-handle
cache (``Storage.executors``) when it has them.

``meta.json`` beside them (``StreamMeta``) keeps what changes after the declaration: the
topic id Kafka names the stream by, and what Kafka's admin APIs changed (a grown partition
count, config overrides, each partition's log start offset). Queue arguments stay as
declared, because AMQP redeclares are checked against them (RabbitMQ's arguments are
immutable, as a policy does not change them either): the overrides apply on top.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartbroker.errors import AMQPError
from smartbroker.queues.base import Storage
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.store import pathsync
from smartbroker.store.log import SegmentLog
from smartbroker.store.memory import MemoryLog
from smartbroker.store.pathsync import fsync_paths, write_new

log = logging.getLogger("smartbroker.stream")
META_FILE = "meta.json"
# Kafka's flush.ms and flush.messages, kept in the overrides only (kafka/stored_configs.py)
FLUSH_MS, FLUSH_MESSAGES = "x-flush-ms", "x-flush-messages"


def stream_directory(storage: Storage | None, vhost: str, name: str) -> Path | None:
    """The stream's directory (made if missing), or None when logs stay in memory."""
    if storage is None:
        return None
    digest = hashlib.sha1(f"{vhost}\x00{name}".encode()).hexdigest()[:20]
    path = Path(storage.data_dir) / "streams" / digest
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if (path / "name").exists():  # reopened: nothing to write
            return path
    write_new(path / "name", f"{vhost}\n{name}\n".encode())  # fsynced by StreamMeta.sync_created
    return path


def open_log(directory: Path | None, storage: Storage | None, name: str,
             segment_bytes: int, *, lazy: bool = False, partition: bool = False,
             overrides: Mapping[str, Any] | None = None) -> Any:
    """One partition (or the offsets) log of a stream: on disk if it has a directory.
    ``lazy``: a log whose directory does not exist yet is made on first use (LazyLog).
    ``partition``: unwaited records are fsynced every ``stream_flush_interval_ms`` (as
    Kafka's partitions), not within 5 ms as the offsets and journal logs are; a topic's
    flush.ms in the stream's ``overrides`` replaces that interval (``flush_interval_ms``)."""
    if directory is None or storage is None:
        return MemoryLog(segment_bytes=segment_bytes)
    if lazy and not (directory / name).exists():
        return LazyLog(lambda: open_log(directory, storage, name, segment_bytes)
                       if directory.is_dir()  # else deleted meanwhile: do not make it again
                       else MemoryLog(segment_bytes=segment_bytes))
    executors = storage.executors
    idle = (flush_interval_ms(overrides or {}, storage.stream_flush_interval_ms)
            if partition else None)
    if executors is None:
        return SegmentLog(directory / name, fsync=storage.fsync, segment_bytes=segment_bytes,
                          idle_fsync_ms=idle)
    return SegmentLog(directory / name, fsync=storage.fsync, segment_bytes=segment_bytes,
                      executor=executors.fsync, handles=executors.handles, idle_fsync_ms=idle)


def flush_interval_ms(overrides: Mapping[str, Any], default: float) -> float:
    """A partition's idle fsync interval: Kafka's flush.ms for its topic (kept in the
    overrides by kafka/stored_configs.py), 0 for flush.messages=1 (fsynced once written
    out), else the broker's ``stream_flush_interval_ms``."""
    if overrides.get(FLUSH_MESSAGES) == 1:
        return 0.0
    value = overrides.get(FLUSH_MS)
    return float(value) if isinstance(value, int) and value >= 0 else default


class LazyLog:
    """A log created on its first use, not with its stream: the group offsets log, which
    most streams never write (a directory, a segment file and two descriptors saved per
    created stream). Reading an uncreated log (``scan_records``) or closing it creates
    nothing; anything else opens the real log and is passed to it. Not for partition
    logs: appends there would pay this indirection per message."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._log: Any = None

    @property
    def opened(self) -> bool:
        return self._log is not None

    def scan_records(self, start: int = 0) -> Iterator[Any]:
        return iter(()) if self._log is None else self._log.scan_records(start)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    async def aclose(self) -> None:
        if self._log is not None:
            await self._log.aclose()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_log", "_opener"):
            raise AttributeError(name)
        if self._log is None:
            self._log = self._opener()
        return getattr(self._log, name)


@dataclass
class StreamMeta:
    """A stream's identity and post-declaration changes, durable in ``meta.json``.

    ``overrides`` maps queue arguments to the value Kafka set (None: back to the default,
    whatever the declaration said); ``log_start`` a partition to its log start offset
    (DeleteRecords). A memory-only stream keeps all this in memory: a random topic id.
    """

    directory: Path | None
    topic_id: uuid.UUID = field(default_factory=uuid.uuid4)
    partitions: int = 0  # the count CreatePartitions grew it to; 0: as declared
    overrides: dict[str, Any] = field(default_factory=dict)
    log_start: dict[int, int] = field(default_factory=dict)
    fsync: bool = True  # False when the broker never fsyncs (``--fsync never``)
    # files a new stream wrote without fsync: ``sync_created`` fsyncs them all at once
    unsynced: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path | None, *, fsync: bool = True) -> StreamMeta:
        """The stream's meta; a new stream (or one from before topic ids) gets a fresh id,
        saved at once so that it survives a restart."""
        meta = cls(directory, fsync=fsync)
        path = None if directory is None else directory / META_FILE
        if path is None:
            return meta
        try:
            raw = json.loads(path.read_text())
            meta.topic_id = uuid.UUID(raw["topic_id"])
            meta.partitions = int(raw.get("partitions", 0))
            meta.overrides = dict(raw.get("overrides", {}))
            meta.log_start = {int(p): int(o) for p, o in raw.get("log_start", {}).items()}
        except FileNotFoundError:  # a new stream: durable with the rest (sync_created)
            meta.save(sync=False)
            meta.unsynced += [path, directory / "name"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("%s is unreadable (%s): the stream gets a new topic id", path, exc)
            meta.save()
        return meta

    def save(self, *, sync: bool = True) -> None:
        """Write ``meta.json`` atomically and durably (temp file, fsync, rename);
        ``sync=False``: the first one, written in place without fsync (a new stream's
        files are fsynced by ``sync_created``). A kill before the declare is answered may
        leave it torn: then ``load`` gives a new id, which no client has seen yet."""
        if self.directory is None:
            return
        raw = {"topic_id": str(self.topic_id), "partitions": self.partitions,
               "overrides": self.overrides,
               "log_start": {str(p): o for p, o in sorted(self.log_start.items())}}
        if not sync:  # the first meta.json: no temp file, no rename (one create fewer)
            write_new(self.directory / META_FILE, json.dumps(raw).encode())
            return
        tmp = self.directory / (META_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(raw, f)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / META_FILE)
        if sync and self.fsync:
            fsync_paths([self.directory])

    def sync_created(self, storage: Storage | None) -> Future[None] | None:
        """A new stream is made durable in one round: its files (``meta.json``, ``name``,
        ``partitioner``) and the directory entries (the stream's, its parent's), fsynced
        on the store's fsync threads in rounds shared by the streams created meanwhile
        (store/pathsync.py), not on the event loop (~1 ms per fsync: a CreateTopics of
        hundreds of topics stalled every client). The declare's answer waits for this
        future (``StreamQueue.created``: AMQP in server/held.py, Kafka CreateTopics in
        kafka/slices.py), so a client told "created" keeps the topic id through a power
        cut. Returns the fsync's future (None: nothing to do, or done inline)."""
        paths, self.unsynced = self.unsynced, []
        if not paths or self.directory is None or not self.fsync:
            return None
        paths += [self.directory, self.directory.parent]
        executors = None if storage is None else storage.executors
        if executors is None:
            fsync_paths(paths)
            return None
        return pathsync.for_executor(executors.fsync).submit(paths)

    def arguments(self, declared: Mapping[str, Any]) -> dict[str, Any]:
        """The declared arguments with the overrides applied: what the stream does now."""
        effective = dict(declared)
        for argument, value in self.overrides.items():
            if value is None:
                effective.pop(argument, None)
            else:
                effective[argument] = value
        return effective

    def settings(self, declared: StreamSettings, arguments: Mapping[str, Any],
                 name: str, vhost: str) -> StreamSettings:
        """The declared settings with the overrides and a grown partition count applied."""
        settings = declared
        if self.overrides:
            try:
                settings = StreamSettings.parse(name, vhost, True, False, False,
                                                self.arguments(arguments))
            except AMQPError as exc:  # checked when set: only a hand-edited file gets here
                log.error("stream %r: config overrides ignored: %s", name, exc)
        if self.partitions > settings.partitions:
            settings = dataclasses.replace(settings, partitions=self.partitions)
        return settings

    def restore_log_starts(self, logs: list[Any]) -> None:
        """At open: each partition log starts where DeleteRecords left it."""
        for partition, offset in self.log_start.items():
            if partition < len(logs):
                logs[partition].set_start(offset)

