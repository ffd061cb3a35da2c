"""Group commit: many appends, one fsync, run off the event loop.

A *round* writes every buffer to the OS (on the loop thread: page-cache writes are quick),
then fsyncs the touched files in a worker thread while new appends keep filling fresh
buffers. Everyone who was waiting when the round started is released when it ends;
whoever arrives during a round is served by the next one. So concurrent publishers share
fsyncs without any artificial delay, and the loop never blocks on the disk.

Policies: ``always`` starts a round as soon as anything is appended; ``batch`` starts one
when someone waits, and otherwise within ``interval`` seconds of the first unsynced
append; ``never`` never fsyncs (a round only hands buffers to the OS).

``idle_fsync`` (streams, ``batch``): data nobody waits for is still handed to the OS
within ``interval``, but fsynced only every ``idle_fsync`` seconds, as Kafka's
``log.flush.interval.ms`` does (RabbitMQ's streams never fsync). A log's unwaited fsyncs
were 12-20% of a stream delivery's CPU; whoever waits (a confirm, a Kafka acks>=1)
still starts a round at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .api import FSYNC_POLICIES, StoreUnavailable

# fdatasync: the data and the file size, without the mtime-only inode updates fsync adds
# (an append-only log needs nothing else; PostgreSQL's WAL default on Linux). macOS has none.
_datasync = getattr(os, "fdatasync", os.fsync)


def fsync_all(fds: list[int]) -> None:
    for fd in fds:
        _datasync(fd)


class GroupCommit:
    """Tracks the durable offset and runs commit rounds for one log.

    ``prepare`` (loop thread) writes buffers out and returns (offset covered, fds to fsync);
    ``finished`` is told the outcome of each round (None or the exception).
    """

    def __init__(
        self,
        prepare: Callable[[], tuple[int, list[int]]],
        finished: Callable[[Exception | None], None],
        pending: Callable[[], bool],
        policy: str = "batch",
        interval: float = 0.005,
        durable: int = 0,
        executor: Executor | None = None,
        write_out: Callable[[], None] | None = None,
        idle_fsync: float | None = None,
    ) -> None:
        # where fsyncs run: the broker's shared pool (store/executors.py), else the loop's
        self._executor = executor
        if policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, not {policy!r}")
        self.policy = policy
        self.interval = interval
        self.durable = durable
        self._prepare = prepare
        self._finished = finished
        self._pending = pending
        # with both: unwaited data is written out every ``interval``, fsynced every
        # ``idle_fsync`` seconds
        self._write_out = write_out if idle_fsync is not None and policy == "batch" else None
        self.idle_fsync = idle_fsync or 0.0
        self._fsync_timer: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.busy = False  # a round's fsync is running in a thread
        self.fsyncs = 0

    def kick(self) -> None:
        """Note new unsynced data: schedule a round (no-op outside an event loop)."""
        if self._task is not None or self._timer is not None:
            return
        loop = asyncio._get_running_loop()  # None outside a loop; cheaper than raising
        if loop is None:
            return
        delay = 0.0 if self.policy == "always" else self.interval
        self._timer = loop.call_later(delay, self._start if self._write_out is None else self._idle)

    def _idle(self) -> None:
        """Unwaited data: to the OS now, its fsync at the next ``idle_fsync`` tick."""
        self._timer = None
        if self._task is not None:
            return
        try:
            self._write_out()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the fsync round below reports the failure
            self._start()
            return
        if self._fsync_timer is None:
            loop = asyncio.get_running_loop()
            self._fsync_timer = loop.call_later(self.idle_fsync, self._start)

    def set_idle_fsync(self, seconds: float) -> None:
        """A new idle fsync interval (a topic's flush.ms altered): what waits for the old
        tick is fsynced now, later data on the new one."""
        self.idle_fsync = seconds
        if self._fsync_timer is not None:
            self._start()

    async def wait(self, target: int) -> None:
        """Return once every offset below ``target`` is durable; raise StoreUnavailable if not."""
        if self.durable >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._start()
        await fut

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fsync_timer is not None:
            self._fsync_timer.cancel()
            self._fsync_timer = None

    def _start(self) -> None:
        self._cancel_timers()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _submit(self) -> tuple[int, asyncio.Future[None] | None] | Exception:
        """Write out what is buffered and start its fsync in a thread: (offset covered,
        the fsync's future or None), or the exception the write-out raised."""
        try:
            covered, fds = self._prepare()
            if not fds or self.policy == "never":
                return covered, None
            self.busy = True
            loop = asyncio.get_running_loop()
            return covered, loop.run_in_executor(self._executor, fsync_all, fds)
        except Exception as e:  # anything, or waiters would hang forever
            return e

    async def _run(self) -> None:
        error: Exception | None = None
        try:
            while True:
                submitted = self._submit()
                error = None
                covered = None  # unknown when the write-out itself failed
                if isinstance(submitted, Exception):
                    error = submitted
                else:
                    covered, fsync = submitted
                    if fsync is not None:
                        try:
                            await fsync
                            self.fsyncs += 1
                        except Exception as e:
                            error = e
                        finally:
                            self.busy = False
                    if error is None:
                        self.durable = max(self.durable, covered)
                self._finished(error)
                self._release(error, covered)
                if error is not None or not self._waiters:
                    break
        finally:
            self._task = None
            if self._waiters:  # arrived after the last check; serve them
                self._start()
            elif self._pending() and not error:  # appended during the round, nobody waiting
                self.kick()

    def _release(self, error: Exception | None, covered: int | None) -> None:
        """Wake the waiters the finished round covers (on an error, those it was to cover
        are told); the others wait for the next round."""
        durable = self.durable
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if error is not None and (covered is None or target <= covered):
                fut.set_exception(StoreUnavailable(f"storage write failed: {error}"))
            elif error is None and target <= durable:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def sync_blocking(self) -> None:
        """Flush and fsync on the calling thread (close(), scripts and sync callers)."""
        self._cancel_timers()  # nothing is left for them (and close() follows)
        try:
            covered, fds = self._prepare()
            if self.policy != "never":
                fsync_all(fds)
                self.fsyncs += 1
        except Exception as e:
            self._finished(e)
            raise StoreUnavailable(f"fsync failed: {e}") from e
        self.durable = max(self.durable, covered)
        self._finished(None)


class WrittenOut:
    """A log as a confirm that needs only the OS to hold the record, not the disk: what a
    stream returns for a transient (delivery-mode 1) AMQP publish. Its confirm goes out
    once the record is written out, so it survives a kill -9 of the broker (not a power
    cut, which a transient message is not promised to survive; a persistent one still
    waits for the fsync, DESIGN.md's group commit). RabbitMQ's streams confirm every
    message this way."""

    __slots__ = ("log",)
    written_only = True

    def __init__(self, log: Any) -> None:
        self.log = log

    def write_out(self) -> None:
        self.log.write_out()

    async def sync(self) -> None:
        self.log.write_out()

