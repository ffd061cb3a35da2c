"""When a replicated quorum queue's held enqueues are committed (issue 16).

The queue led here keeps its enqueues out of the ready list until the replica set has
committed them (``queues/quorum_hold.CommitHold``). This gate, one per replica, says
when: the leader's high watermark moved past them (the core calls ``hw_moved`` once per
batch of acks, no future per message) with enough replicas in sync and a valid lease
(``Leader.ready``, what a confirm waits for). A high watermark without a commit (the
leader alone in sync, below min-insync) leaves them held, with ONE waiter on the
leader's commit for the last of them.

``committed_end`` is where a new leader's rebuilt entries start to be held: the highest
offset this node knows to be committed (the follower's high watermark at the election,
then each commit seen), not the high watermark itself, which an ISR of one moves as it
ships.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartbroker.queues.quorum_hold import CommitHold


class CommitGate:
    """``replicated``: the replica's ``ReplicatedLog`` (None until the core opened it)."""

    __slots__ = ("replicated", "hold", "committed", "_waiting")

    def __init__(self) -> None:
        self.replicated: Any = None
        self.hold: CommitHold | None = None  # the leading queue object's, if any
        self.committed = 0  # highest end known committed here (see module docstring)
        self._waiting: asyncio.Future[None] | None = None

    def opened(self, replicated: Any) -> None:
        self.replicated = replicated
        replicated.on_high_watermark.append(self.hw_moved)

    def elected(self) -> None:
        """This node now leads: what it knew as a follower is what is committed."""
        self.committed = self.replicated.high_watermark
        self.hw_moved(self.committed)  # a hold kept across the election (first lead)

    @property
    def committed_end(self) -> int:
        replicated = self.replicated
        if replicated is None:
            return 0
        leading = replicated.leading
        if leading is None:
            return replicated.high_watermark  # a follower's: the old leader's commits
        if leading.ready(leading.hw - 1):
            self.committed = max(self.committed, leading.hw)
        return self.committed

    def held(self, hold: CommitHold | None) -> None:
        """A queue object here leads with ``hold``: anything already committed goes."""
        self.hold = hold
        replicated = self.replicated
        if hold is not None and replicated is not None and replicated.leading is not None:
            self.hw_moved(replicated.leading.hw)

    def hw_moved(self, hw: int) -> None:
        hold = self.hold
        if hold is None or not hold.count or hold.first >= hw:
            return
        leading = self.replicated.leading
        if leading is None:
            return
        if leading.ready(hw - 1):
            self.committed = max(self.committed, hw)
            hold.release(hw)
        elif self._waiting is None:  # too few in sync (a rare state): one waiter
            fut = self._waiting = leading.wait(hold.last)
            fut.add_done_callback(lambda f: self._released(f, leading, hold))

    def _released(self, fut: asyncio.Future[None], leading: Any, hold: CommitHold) -> None:
        self._waiting = None
        if fut.cancelled() or fut.exception() is not None or self.hold is not hold:
            return  # NotLeader: the queue object was released; or another one leads
        self.committed = max(self.committed, leading.hw)
        hold.release(leading.hw)
