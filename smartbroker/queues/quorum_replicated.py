"""A quorum queue led here whose messages live in its own replicated log (issue 16).

``lead`` turns a ``QuorumQueue`` into the leader of a replicated one: it rebuilds the
queue from the log (``QuorumLog.recover``: what a follower's copy holds is what the old
leader had, so failover is a restart of the queue; unacked messages of the old leader
come back ``redelivered``), then every enqueue and mark goes to that log. Every message
rebuilt so comes back ``redelivered``: the old leader marks a delivery in the pass it
delivers, but the mark reaches the followers a moment later, so any of them may have
been delivered already (AMQP's flag means "may have been"; RabbitMQ's Raft state knows
exactly, at the price of a commit per delivery). The queue keeps
using ``host.store`` as it does on one node: ``OwnStore`` is its host with the store
swapped, so classic.py needs no replicated branch. A publish's confirm waits for
``CommittedSync`` (the replicated streams' own, ``stream_replicated.py``): the local fsync
AND the replica set's commit (``committed``, from the replication core), as RabbitMQ
confirms once the Raft entry is committed; a failed commit is a nack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smartbroker.queues.base import PublishResult
from smartbroker.queues.quorum_hold import CommitHold
from smartbroker.queues.stream_replicated import CommittedSync

if TYPE_CHECKING:
    from smartbroker.queues.quorum import QuorumQueue
    from smartbroker.queues.quorum_log import QuorumLog

Committed = Callable[[int], Awaitable[Any]]  # ReplicatedLog.committed: held by the ISR


class OwnStore:
    """The queue's host (its vhost) with ``store`` its own log: everything else (timers,
    dead-lettering, auto-delete) is the vhost's."""

    __slots__ = ("_host", "store")

    def __init__(self, host: Any, store: QuorumLog) -> None:
        self._host = host
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


def lead(queue: QuorumQueue, qlog: QuorumLog, committed: Committed,
         committed_end: int | None = None, serving: Callable[[], bool] | None = None) -> int:
    """Make ``queue`` keep its messages in ``qlog``, rebuilt from it; returns how many
    messages it recovered (-1: it leads with this log already). ``committed_end``: the
    replica set's high watermark as known here; given, enqueues wait in a
    ``CommitHold`` until committed (the rebuilt ones from that offset on too), and the
    caller releases them (None: into the queue at once, for tools and unit tests).
    ``serving``: whether this node's leadership still holds, asked before every
    dispatch (``QuorumQueue.serves``)."""
    if queue.own_log is qlog:
        return -1  # leads already
    queue.uses_store = False  # the vhost no longer writes its messages to the shared store
    queue.host = OwnStore(getattr(queue.host, "_host", queue.host), qlog)
    queue.own_log = qlog
    queue.led = True  # for good: what it holds is the log's, never forwarded elsewhere
    queue.serving = serving
    name = f"quorum queue '{queue.name}' in vhost '{queue.vhost}'"
    queue.own_result = PublishResult(True, CommittedSync(qlog, committed, name))
    qlog.leading = True
    queue.wake = _dispatching_wake(queue)
    queue.hold = hold = None if committed_end is None else CommitHold(queue)
    entries = qlog.recover()
    if entries and hold is not None and committed_end is not None:
        held = [rec for rec in entries
                if rec.offset >= committed_end and rec.dead_reason is None]
        if held:
            hold.hold_recovered(held)
            entries = [rec for rec in entries
                       if rec.offset < committed_end or rec.dead_reason is not None]
    if entries:
        queue.restore(entries)
        for entry in queue.ready:  # the flag alone: x-delivery-count stays the log's
            entry.redelivered = True
        queue.dispatch()
    return len(entries) + (0 if hold is None else hold.count)


def _dispatching_wake(queue: QuorumQueue) -> Callable[[Any], None]:
    """``wake`` that also dispatches at the end of the loop pass. A channel dispatches
    the queue of the delivery just settled, and a consumer that carried on across a
    failover settles the old leader's deliveries on the old queue object: without this,
    the credit its ack gives back would wait for the next publish."""
    ring_wake = queue.wake
    pending = False

    def dispatch() -> None:
        nonlocal pending
        pending = False
        if not queue.deleted:
            queue.dispatch()

    def wake(consumer: Any) -> None:
        nonlocal pending
        ring_wake(consumer)
        if pending:
            return
        loop = asyncio._get_running_loop()
        if loop is None:  # no event loop (tools, tests): the caller dispatches
            return
        pending = True
        loop.call_soon(dispatch)

    return wake


class Detached:
    """The store of a queue object that no longer leads: its late settlements are not
    written (the log is a follower's now, appended to by the core alone); bodies it
    still holds on disk can be read."""

    __slots__ = ("qlog",)

    def __init__(self, qlog: QuorumLog) -> None:
        self.qlog = qlog

    def delivered(self, vhost: str, queue: str, offset: int) -> None:
        return None

    forget = delivered

    def load(self, offset: int) -> Any:
        return self.qlog.load(offset)


def release(queue: QuorumQueue) -> None:
    """This object stops leading (another node does now): whatever it still settles or
    forgets is not written; the new leader has the log's truth."""
    qlog = getattr(queue, "own_log", None)  # None: a proxy, or never led here
    if qlog is not None:
        qlog.leading = False
        hold, queue.hold = queue.hold, None
        if hold is not None:  # not applied here: the next leader rebuilds what committed
            hold.close()
        queue.host = OwnStore(getattr(queue.host, "_host", queue.host), Detached(qlog))  # type: ignore[arg-type]
        queue.own_log = None  # its publishes are nacked from now on
