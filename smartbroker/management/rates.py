"""Message rates for the API (``*_details.rate``), sampled on a timer.

As RabbitMQ's ``collect_statistics_interval``: every interval the counters are read once,
and a rate is the change since the previous reading divided by the time between them. An
API read is a dict lookup and every reader sees the same numbers (before, each read took
its own sample). Sampling walks every queue once per interval, off the hot path; a queue
with all counters at zero costs no entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smartbroker.management.state import ManagementState

log = logging.getLogger(__name__)
OVERVIEW = "overview"  # the key of the broker-wide totals; a queue's key is id(queue)
Readings = Iterable[tuple[Hashable, Sequence[int]]]


class MessageRates:
    """The last sampled rates per key, one rate per counter (``state.STAT_KEYS`` order).

    A key missing from a reading (a deleted queue) is forgotten; a key new since the last
    reading (a queue declared in between) started from zero, as its counters do."""

    def __init__(self, read: Callable[[], Readings], interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._read = read
        self._clock = clock
        self._last: dict[Hashable, Sequence[int]] = {}
        self._last_at: float | None = None
        self._rates: dict[Hashable, tuple[float, ...]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Read the counters now and turn the change since the last reading into rates."""
        now = self._clock()
        current = {key: values for key, values in self._read() if any(values)}
        if self._last_at is not None and now > self._last_at:
            span = now - self._last_at
            last = self._last
            self._rates = {
                key: tuple(round(max(v - b, 0) / span, 1)
                           for v, b in zip(values, last.get(key) or (0,) * len(values),
                                           strict=True))
                for key, values in current.items()}
        self._last, self._last_at = current, now

    def of(self, key: Hashable) -> tuple[float, ...] | None:
        """The rates of ``key`` at the last sample; None while it has none (rates are 0)."""
        return self._rates.get(key)

    # -- the timer ---------------------------------------------------------------------
    def start(self) -> None:
        """Sample now and then every ``interval`` seconds on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="message-rates")

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # pragma: no cover - a bug here must not stop the broker
                log.exception("sampling message rates failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def readings(state: ManagementState) -> Iterable[tuple[Hashable, tuple[int, ...]]]:
    """The counters behind ``message_stats``: the broker's totals and each live queue's."""
    from smartbroker.management.state import STAT_KEYS

    state.hook_vhosts()  # a queue deleted from a new vhost still counts in the totals
    totals = [state.retired_stats[k] for k in STAT_KEYS]
    for vhost in list(state.broker.vhosts.values()):  # one pass: totals and queues together
        for q in list(vhost.queues.values()):
            stats = q.stats
            if stats:
                values = tuple(stats.get(k, 0) for k in STAT_KEYS)
                for i, v in enumerate(values):
                    totals[i] += v
                yield id(q), values
    yield OVERVIEW, tuple(totals)
