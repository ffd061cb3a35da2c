"""A classic queue's consumers in delivery order: priority levels of round-robin rings."""

from __future__ import annotations

from collections import deque

from smartbroker.queues.base import Consumer


class ConsumerRings:
    """A queue's consumers by ``x-priority`` (highest first, stable by arrival) and, per
    priority level, a round-robin ring of those that may have credit.

    Why rings: a consumer found without credit is *parked* (left out of its ring) until
    its channel calls ``wake`` when an ack, qos, flow or writability gives credit back; a
    publish then never walks blocked consumers (issue 12: 5,000 consumers at prefetch 1
    made every publish O(consumers)). Every ``Consumer`` has ``parked`` and promises
    that wake-up (a test double calls ``queue.wake`` when it gives credit back).
    """

    __slots__ = ("members", "_ring_of", "rings")

    def __init__(self) -> None:
        self.members: list[Consumer] = []
        self._ring_of: dict[int, deque[Consumer]] = {}
        self.rings: list[deque[Consumer]] = []  # the rings, highest priority first

    def add(self, consumer: Consumer) -> None:
        members = self.members
        index = len(members)
        while index > 0 and members[index - 1].priority < consumer.priority:
            index -= 1
        members.insert(index, consumer)
        ring = self._ring_of.get(consumer.priority)
        if ring is None:
            ring = self._ring_of[consumer.priority] = deque()
            self._reorder()
        consumer.parked = False
        ring.append(consumer)

    def remove(self, consumer: Consumer) -> bool:
        """False if it was not a consumer here."""
        try:
            self.members.remove(consumer)
        except ValueError:
            return False
        priority = consumer.priority
        if consumer.parked:
            consumer.parked = False  # gone: its channel must not wake it here again
        else:
            self._ring_of[priority].remove(consumer)
        if not any(c.priority == priority for c in self.members):
            del self._ring_of[priority]
            self._reorder()
        return True

    def clear(self) -> list[Consumer]:
        """Forget every consumer (the queue is deleted); returns them."""
        gone = list(self.members)
        self.members.clear()  # the same list object: the queue exposes it as ``consumers``
        self._ring_of.clear()
        self.rings = []
        for consumer in gone:
            consumer.parked = False
        return gone

    def _reorder(self) -> None:
        self.rings = [self._ring_of[p] for p in sorted(self._ring_of, reverse=True)]

    def pick(self, peek: bool = False, first_blocked: bool = False) -> Consumer | None:
        """The next consumer with credit, round-robin within the highest level that has
        one; ``peek`` leaves the rotation as it is; ``first_blocked``: the caller already
        found the first consumer of the top ring without credit. Amortised O(1): each
        consumer looked at and found blocked leaves its ring until woken."""
        for ring in self.rings:
            for _ in range(len(ring)):
                consumer = ring[0]
                if first_blocked:
                    first_blocked = False
                elif consumer.can_take():
                    if not peek:
                        ring.rotate(-1)
                    return consumer
                ring.popleft()
                consumer.parked = True
        return None

    def wake(self, consumer: Consumer) -> None:
        """Credit may be back for a parked consumer: to the back of its ring."""
        if consumer.parked:
            consumer.parked = False
            self._ring_of[consumer.priority].append(consumer)
