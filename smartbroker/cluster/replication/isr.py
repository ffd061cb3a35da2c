"""The leader's arithmetic, sans-IO: each follower's progress, the high watermark, who
falls out of the in-sync set and who may come back (Kafka's rules: a follower is in
sync while it has caught up with the leader's log end within ``replica_lag_ms``; it
comes back once it holds everything up to the high watermark and the leader's epoch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping

from smartbroker.store.replica import Cursor

LINK_GRACE = 1.0  # seconds a follower's link may be down before it leaves the ISR
MAX_MARKS = 4096  # sends remembered per follower (bounded by the link's credit anyway)


class Progress:
    """What the leader knows of one follower."""

    __slots__ = ("acked", "blocked", "caught_up_at", "cursor", "down_since", "marks", "node",
                 "sent_hw")

    def __init__(self, node: str, now: float) -> None:
        self.node = node
        self.cursor: Cursor | None = None  # None: where its log ends is not known (probe)
        self.acked = -1  # the follower's durable end (exclusive); -1 unknown
        self.caught_up_at = now  # the last time it held all the leader had
        self.marks: deque[tuple[int, float]] = deque()  # (end shipped, when)
        self.blocked = False  # the link said stop: wait for it to be writable
        self.sent_hw = -1  # the high watermark it was last told
        self.down_since: float | None = None  # its link went down then (None: up)

    def shipped(self, end: int, now: float) -> None:
        marks = self.marks
        if len(marks) >= MAX_MARKS:
            marks.popleft()
        marks.append((end, now))

    def acknowledged(self, offset: int, leader_end: int, now: float) -> None:
        """Its log is durable up to ``offset`` (exclusive)."""
        self.acked = offset
        marks = self.marks
        while marks and marks[0][0] <= offset:
            self.caught_up_at = marks.popleft()[1]
        if offset >= leader_end:
            self.caught_up_at = now

    def reset(self, offset: int | None) -> None:
        """Its log ends at ``offset`` (None: unknown): ship from there."""
        self.marks.clear()
        self.blocked = False
        if offset is None:
            self.cursor = None
        else:
            self.cursor = Cursor(offset)
            self.acked = offset

    def lagging(self, leader_end: int, now: float, lag: float) -> bool:
        """Behind the leader and not caught up for longer than ``lag`` seconds."""
        return self.acked < leader_end and now - self.caught_up_at > lag


def high_watermark(me: str, leader_end: int, progress: Mapping[str, Progress],
                   in_sync: Iterable[str]) -> int:
    """The first offset not yet held by every in-sync member (the leader counts with its
    log end: its own fsync is awaited by ``committed`` itself)."""
    hw = leader_end
    for node in in_sync:
        if node != me:
            p = progress.get(node)
            acked = p.acked if p is not None else -1
            if acked < hw:
                hw = acked
    return max(hw, 0)


def to_drop(me: str, isr: Collection[str], members: Collection[str], leader_end: int,
            progress: Mapping[str, Progress], up: Collection[str], now: float,
            lag: float, link_grace: float = LINK_GRACE) -> list[str]:
    """In-sync members that must leave the set: no longer members, down (for
    membership, or their link for longer than ``link_grace``: a kill -9 closes the
    socket at once, membership sees it only when the lease expires), or lagging."""
    out = []
    for node in isr:
        if node == me:
            continue
        p = progress.get(node)
        if (node not in members or node not in up or p is None
                or (p.down_since is not None and now - p.down_since > link_grace)
                or p.lagging(leader_end, now, lag)):
            out.append(node)
    return out


def to_add(me: str, isr: Collection[str], members: Collection[str], hw: int,
           epoch_start: int, progress: Mapping[str, Progress], up: Collection[str]) -> list[str]:
    """Members out of the set that hold everything up to the high watermark and the
    leader's epoch start: they may come back."""
    out = []
    for node in members:
        if node == me or node in isr or node not in up:
            continue
        p = progress.get(node)
        if p is not None and p.cursor is not None and p.acked >= max(hw, epoch_start):
            out.append(node)
    return out


def enough(in_sync: Collection[str], min_insync: int) -> bool:
    """Whether the in-sync set may commit at all (leader included)."""
    return len(in_sync) >= min_insync
