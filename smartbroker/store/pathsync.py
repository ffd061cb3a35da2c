"""fsyncs of files and directory entries that were written without one, batched on the
store's fsync threads.

Why: creating a stream writes a few small files (queues/stream_storage.py); fsyncing
them on the event loop cost ~4 fsyncs (several ms) per stream, and a CreateTopics of
hundreds of topics stalled every client. Here paths queue up while a round runs and the
next round fsyncs them all once (a directory shared by many, like ``streams/``, once per
round, not once per stream).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import Executor, Future

log = logging.getLogger(__name__)
_syncers: weakref.WeakKeyDictionary[Executor, PathSync] = weakref.WeakKeyDictionary()
_syncers_lock = threading.Lock()


def fsync_paths(paths: Iterable[str | os.PathLike[str]]) -> None:
    """fsync each file or directory, blocking (a worker thread's job, or a rare change)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_new(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a small file in place, without fsync (one open, one write: none of the text
    layer's extra calls); its durability is a ``PathSync`` round's job."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class PathSync:
    """Batches fsyncs of paths onto one executor; ``submit`` returns when the round that
    covers the paths is done (its future)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}  # ordered, without duplicates
        self._future: Future[None] | None = None  # the round not yet started

    def submit(self, paths: Iterable[str | os.PathLike[str]]) -> Future[None]:
        with self._lock:
            for path in paths:
                self._pending[os.fspath(path)] = None
            future = self._future
            if future is None:
                future = self._future = Future()
                self._start()
            return future

    def _start(self) -> None:
        """On an event loop, the round starts once the loop is done with the current
        callback (a CreateTopics of hundreds of topics): its fsyncs would otherwise
        contend with the creations still to come (the filesystem journal), and all of
        them then share one round."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._executor.submit(self._round)
        else:
            loop.call_soon(self._executor.submit, self._round)

    def _round(self) -> None:
        with self._lock:
            paths, self._pending = list(self._pending), {}
            future, self._future = self._future, None
        if future is None:
            return
        error: OSError | None = None
        for path in paths:  # one failure must not leave the other paths unsynced
            try:
                fsync_paths([path])
            except FileNotFoundError:
                pass  # deleted meanwhile (a stream declared and deleted): nothing to keep
            except OSError as exc:
                log.error("fsync of %s failed: %s", path, exc)
                error = exc
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def for_executor(executor: Executor) -> PathSync:
    """The shared ``PathSync`` of an executor (the broker's fsync pool)."""
    with _syncers_lock:
        syncer = _syncers.get(executor)
        if syncer is None:
            syncer = _syncers[executor] = PathSync(executor)
        return syncer
