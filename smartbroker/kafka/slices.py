"""Admin work done in slices of loop time, answered once what it created is durable.

Why: declaring a stream costs ~1 ms of file creation (directory, segment, ``meta.json``,
``partitioner``; a profiled CreateTopics of 300 topics: 0.26 s on a quiet machine, 90% of
it in StreamQueue.__init__'s mkdir/open calls, up to 1.5 s on two loaded cores), so a CreateTopics of hundreds of topics done in one
handler call stalled every other client for that long. Here the work runs a slice at a
time (``SLICE_SECONDS`` of loop time, each slice one definitions commit) and yields to the
loop between slices; the answer then waits for the new streams' files to be fsynced
(``StreamQueue.created``, fsynced off the loop by store/pathsync.py), so a client told
"created" keeps its topic id and configs through a power cut.

A request that fits in one slice and created nothing that awaits an fsync (memory-only
streams, validate_only, refusals) is answered in the same call, as before. In cluster mode
the answer also waits for etcd to take the definitions (``after_commit``), as a declare's
-ok does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from time import perf_counter
from typing import Any, TypeVar

log = logging.getLogger("smartbroker.kafka")
SLICE_SECONDS = 0.01  # loop time one slice may take before others get their turn

T = TypeVar("T")
R = TypeVar("R")

_running: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps weak ones


class Sliced:
    """Apply ``step`` to each item, a slice at a time, each slice inside ``commit()``
    (one definitions commit per slice, not one per item). ``step`` returns the item's
    result and the fsync future of what it created (None: nothing to wait for)."""

    def __init__(self, items: Sequence[T], step: Callable[[T], tuple[R, Future[None] | None]],
                 commit: Callable[[], AbstractContextManager[Any]]) -> None:
        self.items = items
        self.step = step
        self.commit = commit
        self.results: list[R] = []
        self.syncs: list[tuple[int, Future[None]]] = []  # (index, fsync) pending

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.items)

    def run_slice(self) -> None:
        """Steps until the slice's time is up (at least one)."""
        deadline = perf_counter() + SLICE_SECONDS
        with self.commit():
            while not self.done:
                result, sync = self.step(self.items[len(self.results)])
                if sync is not None and not sync.done():
                    self.syncs.append((len(self.results), sync))
                self.results.append(result)
                if perf_counter() >= deadline:
                    break

    async def finish(self) -> list[BaseException | None]:
        """The remaining slices, one per loop pass, then every fsync; the failure of each
        item's fsync (None: durable), by index."""
        while not self.done:
            await asyncio.sleep(0)
            self.run_slice()
        failures: list[BaseException | None] = [None] * len(self.items)
        if self.syncs:
            outcomes = await asyncio.gather(
                *(asyncio.wrap_future(f) for _, f in self.syncs), return_exceptions=True)
            for (index, _), outcome in zip(self.syncs, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failures[index] = outcome
        return failures


def run(items: Sequence[T], step: Callable[[T], tuple[R, Future[None] | None]],
        commit: Callable[[], AbstractContextManager[Any]],
        answer: Callable[[list[R], list[BaseException | None]], Any]) -> Any:
    """``answer(results, fsync failures)`` now if one slice did it all and nothing awaits
    an fsync, else a future of it (what the Kafka listener defers a response on)."""
    work = Sliced(items, step, commit)
    work.run_slice()
    if work.done and not work.syncs:
        return answer(work.results, [None] * len(items))

    async def rest() -> Any:
        return answer(work.results, await work.finish())

    return detached(rest())


def after_commit(response: Any, pending: Callable[[], Awaitable[object] | None],
                 entries: Callable[[Any], Iterable[Any]]) -> Any:
    """``response`` (or a future of it) once the definitions store committed what the
    request recorded (cluster mode: etcd took it; ``pending`` as the recorder's). If the
    store refused it (and undid it), the ``entries`` that succeeded answer
    UNKNOWN_SERVER_ERROR instead."""

    async def later() -> Any:
        body = await response if isinstance(response, asyncio.Future) else response
        waiting = pending()
        if waiting is not None:
            try:
                await waiting
            except Exception as exc:
                timed_out = isinstance(exc, TimeoutError)  # etcd did not commit in time
                for entry in entries(body):
                    if entry.error_code == 0:  # Kafka's REQUEST_TIMED_OUT, UNKNOWN_SERVER_ERROR
                        entry.error_code = 7 if timed_out else -1
                        entry.error_message = str(exc) if timed_out else \
                            f"the definitions store refused it: {exc}"
        return body

    if not isinstance(response, asyncio.Future) and pending() is None:
        return response
    return detached(later())


def detached(work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """A future of ``work``'s result; cancelling it (the client went away) does not stop
    the work, as Kafka finishes a CreateTopics whatever the client does meanwhile."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    task = loop.create_task(work)
    _running.add(task)

    def done(t: asyncio.Task[T]) -> None:
        _running.discard(t)
        if future.done():
            return
        if t.cancelled():
            future.cancel()
        elif (exc := t.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(t.result())

    task.add_done_callback(done)
    return future

