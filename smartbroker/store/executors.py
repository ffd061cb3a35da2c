"""The worker threads the stores use for blocking disk work, owned by whoever starts the
broker (``Persistence``) and passed down to every log, compactor and reclaimer; with them
the broker-wide bound on open segment files (``handles``, store/handles.py).

Two small pools, made on first use: ``fsync`` (group commits: a few threads so thousands
of logs do not mean thousands of threads) and ``compact`` (one thread: rewrites are
background work, not urgent). A store built without an ``Executors`` (tests, tools) runs
its blocking work on the event loop's default executor instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .handles import HandleCache

FSYNC_WORKERS = 4
COMPACT_WORKERS = 1


class Executors:
    __slots__ = ("_fsync", "_compact", "handles")

    def __init__(self, handles: HandleCache | None = None) -> None:
        self._fsync: ThreadPoolExecutor | None = None
        self._compact: ThreadPoolExecutor | None = None
        self.handles = handles if handles is not None else HandleCache()  # every log's files

    @property
    def fsync(self) -> ThreadPoolExecutor:
        if self._fsync is None:
            self._fsync = ThreadPoolExecutor(FSYNC_WORKERS, thread_name_prefix="store-fsync")
        return self._fsync

    @property
    def compact(self) -> ThreadPoolExecutor:
        if self._compact is None:
            self._compact = ThreadPoolExecutor(COMPACT_WORKERS, thread_name_prefix="store-compact")
        return self._compact

    def shutdown(self) -> None:
        """Broker stopped: let running work finish, start no more."""
        for pool in (self._fsync, self._compact):
            if pool is not None:
                pool.shutdown(wait=True)
        self._fsync = self._compact = None
