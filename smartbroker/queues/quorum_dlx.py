"""``x-dead-letter-strategy: at-least-once`` for quorum queues, as RabbitMQ 3.10 runs it
(rabbit_fifo_dlx.erl, rabbit_fifo_dlx_worker.erl).

At-most-once dead-lettering publishes the copy and forgets the message at once: a target
that refuses it, or no target at all, loses it. At-least-once keeps the dead-lettered
message in the source queue (its store record stays live) until every target queue has
confirmed its copy; only then is it forgotten. Until then it is counted in
``messages_dlx`` / ``message_bytes_dlx`` and, since rabbit_fifo counts it in
``is_over_limit``, in the queue's ``reject-publish`` limits: a queue whose dead letters
cannot be delivered fills up and refuses publishes, instead of losing them.

A message with no route (no DLX, no binding, or only cycles) or refused by a target
waits and is tried again every ``RETRY_AFTER`` seconds (RabbitMQ's
``dead_letter_worker_publisher_confirm_timeout``, 2 minutes), or when the queue's
settings change (RabbitMQ's worker looks the topology up again on a policy change).
Targets that already confirmed a copy are not sent another (``settled``).

Why a separate object: the queue stays the classic queue's configuration; the discards
stage (its counters, retries and confirm waits) is one job with its own state.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from smartbroker.dlq.deadletter import dead_letter_targets
from smartbroker.queues.base import QueueEntry
from smartbroker.queues.settings import QueueSettings

log = logging.getLogger("smartbroker.queues")
RETRY_AFTER = 120.0  # seconds (rabbit: dead_letter_worker_publisher_confirm_timeout)


def dead_letter_strategy(queue: str, vhost: str, arguments: Mapping[str, Any],
                         policy: Mapping[str, Any] | None, settings: QueueSettings) -> str:
    """rabbit_quorum_queue:dlh/5: the argument, else the policy's ``dead-letter-strategy``;
    at-least-once needs a DLX and reject-publish, and with any other overflow it falls
    back to at-most-once (logged, as RabbitMQ does)."""
    strategy = arguments.get("x-dead-letter-strategy")
    if strategy is None and policy:
        strategy = policy.get("dead-letter-strategy")
    if isinstance(strategy, bytes):
        strategy = strategy.decode(errors="replace")
    if strategy != "at-least-once" or settings.dead_letter_exchange is None:
        return "at-most-once"
    if settings.overflow != "reject-publish":
        log.warning("Falling back to dead-letter-strategy at-most-once for queue '%s' in "
                    "vhost '%s' because configured dead-letter-strategy at-least-once is "
                    "incompatible with effective overflow strategy %s. To enable "
                    "dead-letter-strategy at-least-once, set overflow strategy to "
                    "reject-publish.", queue, vhost, settings.overflow)
        return "at-most-once"
    return "at-least-once"


class DeadLetterSource(Protocol):
    """What the worker needs of its quorum queue."""

    name: str
    host: Any
    leads_here: bool  # False: a replicated queue's leadership moved; the new leader forwards

    @property
    def dead_letter_target(self) -> tuple[str, str | None] | None: ...

    def release_discarded(self, entry: QueueEntry) -> None: ...


@dataclass(slots=True, eq=False)
class Discarded:
    entry: QueueEntry
    reason: str
    size: int
    settled: set[str] = field(default_factory=set)  # target queues that confirmed a copy


class DeadLetterWorker:
    """One quorum queue's discards stage (see the module docstring)."""

    def __init__(self, queue: DeadLetterSource) -> None:
        self.queue = queue
        self.count = 0  # messages_dlx
        self.bytes = 0  # message_bytes_dlx
        self._new: deque[Discarded] = deque()  # to forward at the end of this loop pass
        self._waiting: list[Discarded] = []  # no route or refused: tried again later
        self._held: set[Discarded] = set()  # every message here, to drop them on close
        self._scheduled = False
        self._timer: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def discard(self, entry: QueueEntry, reason: str) -> None:
        """The entry left the queue's ready/unacked sets for the DLX; it stays stored."""
        item = Discarded(entry, reason, entry.size)
        self.count += 1
        self.bytes += item.size
        self._held.add(item)
        self._new.append(item)
        if not self._scheduled:
            loop = asyncio._get_running_loop()
            if loop is not None:  # outside a loop (unit tests): ``forward`` by hand
                self._scheduled = True
                loop.call_soon(self.forward)

    def forward(self) -> None:
        """Publish this pass's dead letters (outside the settle that made them, so a
        chain of dead-lettering queues never recurses)."""
        self._scheduled = False
        batch, self._new = self._new, deque()
        self._send(list(batch))

    def retry(self) -> None:
        """Try the waiting ones again (timer, or the queue's settings changed)."""
        if asyncio._get_running_loop() is None:
            return  # no loop (tools, unit tests): they keep waiting
        if self._timer is not None:
            self._timer.cancel()  # a policy change: the next retry is timed from now
            self._timer = None
        waiting, self._waiting = self._waiting, []
        self._send(waiting)

    def _send(self, items: list[Discarded]) -> None:
        if self.closed or not items:
            return
        if not self.queue.leads_here:
            self.close()
            return
        target = self.queue.dead_letter_target
        vhost = self.queue.host
        sent: list[tuple[Discarded, str]] = []
        logs: set[Any] = set()
        for item in items:
            copies = self._publish(vhost, item, target) if target is not None else None
            if not copies:
                self._wait(item)
                continue
            for qname, accepted, synced in copies:
                if accepted:
                    sent.append((item, qname))
                    logs.update(synced)
            if not all(accepted for _, accepted, _ in copies):
                self._wait(item)  # a refusing target gets its copy on a retry
        if sent:
            task = asyncio.get_running_loop().create_task(self._confirm(sent, tuple(logs)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _publish(self, vhost: Any, item: Discarded,
                 target: tuple[str, str | None]) -> list[tuple[str, bool, tuple[Any, ...]]]:
        """One copy per target queue that has not confirmed one yet: (queue, accepted,
        logs to sync before it counts as confirmed). Empty: no route."""
        dead, queues = dead_letter_targets(vhost, item.entry.message, self.queue.name,
                                           item.reason, *target)
        copies = []
        for q in queues:
            if q.name in item.settled:
                continue
            accepted, synced = vhost.enqueue([q], dead)
            copies.append((q.name, accepted, synced))
        if queues and not copies:  # every route confirmed already (a retry)
            self._settle_later(item)
        return copies

    def _settle_later(self, item: Discarded) -> None:
        asyncio.get_running_loop().call_soon(self._release, item)

    async def _confirm(self, sent: list[tuple[Discarded, str]], logs: tuple[Any, ...]) -> None:
        """Each copy counts once its target's log is synced (the publisher confirm)."""
        try:
            if logs:
                await asyncio.gather(*(lg.sync() for lg in logs))
        except Exception as exc:  # noqa: BLE001 - not confirmed: try again later
            log.warning("quorum queue '%s': dead-letter copies not confirmed (%s), retrying "
                        "in %.0f s", self.queue.name, exc, RETRY_AFTER)
            for item in {item for item, _ in sent}:
                self._wait(item)
            return
        done: dict[Discarded, None] = {}
        for item, qname in sent:
            item.settled.add(qname)
            done[item] = None
        for item in done:
            if item not in self._waiting:
                self._release(item)

    def _release(self, item: Discarded) -> None:
        """Every target confirmed: the message leaves the source queue for good."""
        if self.closed or item not in self._held:
            return
        self._held.discard(item)
        self.count -= 1
        self.bytes -= item.size
        self.queue.release_discarded(item.entry)

    def _wait(self, item: Discarded) -> None:
        if item in self._held and item not in self._waiting:
            self._waiting.append(item)
        if self._timer is None and not self.closed:
            self._timer = self.queue.host.call_later(RETRY_AFTER, self.retry)

    def drop(self, vhost: str) -> list[QueueEntry]:
        """The strategy is no longer at-least-once: RabbitMQ deletes what is held."""
        if self.count:
            log.info("Deleted %d dead-lettered messages (with total messages size of %d "
                     "bytes) in queue '%s' in vhost '%s'", self.count, self.bytes,
                     self.queue.name, vhost)
        return self.close()

    def close(self) -> list[QueueEntry]:
        """The queue is deleted or stops leading: its held entries (for the caller to
        forget or leave to the next leader's recovery)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        entries = [item.entry for item in self._held]
        self._held.clear()
        self._new.clear()
        self._waiting.clear()
        self.count = self.bytes = 0
        return entries
