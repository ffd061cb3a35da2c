"""Unit checks of what a replicated quorum queue's failover leans on in forwarding.

A group-commit round takes its publishers' marks, then asks each log (a forwarder) to
``sync``. A publish forwarded after the marks but before the round's coroutine first
ran belongs to the NEXT round; if the leader is then lost, that next round must fail
(nack), not confirm a publish the dead leader never confirmed (kill -9 of a quorum
queue's leader under a pipelining publisher lost confirmed messages this way).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smartbroker.broker.durable import MessageStore
from smartbroker.cluster.forwarding_publish import Forwarder
from smartbroker.message import Message
from smartbroker.store.api import StoreUnavailable


class Link:
    def send(self, peer: str, spec: object, item: tuple) -> bool:
        return True


def test_a_publish_after_the_rounds_marks_is_the_next_rounds_to_nack() -> None:
    async def run() -> None:
        forwarder = Forwarder("n1", Link())
        msg = Message.build("", "q", b"x")
        forwarder.forward("/", "q", msg)  # in round 1's marks
        round1 = forwarder.sync()  # the round starts: its target is taken now
        forwarder.forward("/", "q", msg)  # after round 1's marks: round 2's
        forwarder.peer_down()  # the leader is lost, neither confirmed
        with pytest.raises(StoreUnavailable):
            await round1
        with pytest.raises(StoreUnavailable):
            await forwarder.sync()  # round 2 nacks its publish too

    asyncio.run(run())


def test_confirmed_rounds_pass() -> None:
    async def run() -> None:
        forwarder = Forwarder("n1", Link())
        forwarder.forward("/", "q", Message.build("", "q", b"x"))
        round1 = asyncio.ensure_future(forwarder.sync())
        await asyncio.sleep(0)
        forwarder.on_confirm(1, False)
        await round1

    asyncio.run(run())


class Publisher:
    """A confirming channel as MessageStore sees it: publishes numbered 1, 2, ...;
    ``synced`` confirms every one up to a mark, ``nack_waiting`` / ``sync_failed`` nack."""

    def __init__(self) -> None:
        self.seq = 0
        self.waiting: list[int] = []
        self.acked: list[int] = []
        self.nacked: list[int] = []

    def publish(self, store: MessageStore, forwarder: Forwarder) -> None:
        self.seq += 1
        self.waiting.append(self.seq)
        forwarder.forward("/", "q", Message.build("", "q", b"x"))
        store.request_sync(self, (forwarder.claim(store.claims).sync,))

    def sync_mark(self) -> int:
        return self.seq

    def nack_waiting(self, seq: int) -> None:
        if seq in self.waiting:
            self.waiting.remove(seq)
            self.nacked.append(seq)

    def synced(self, mark: int) -> None:
        self.acked += [s for s in self.waiting if s <= mark]
        self.waiting = [s for s in self.waiting if s > mark]

    def sync_failed(self, mark: int) -> None:
        self.nacked += [s for s in self.waiting if s <= mark]
        self.waiting = [s for s in self.waiting if s > mark]


@pytest.mark.parametrize("first_released", ["a", "b"])
def test_a_lost_leader_nacks_every_publisher_whatever_order_they_are_released_in(
        tmp_path: Path, first_released: str) -> None:
    """Confirms are released per publisher: two channels forwarding to one leader have a
    round each. When the leader is lost with both rounds open, each channel's
    unconfirmed publishes are nacked, whichever round the loop releases first (with one
    forwarder-wide "already reported" mark, the second round released was confirmed)."""
    async def run() -> None:
        store = MessageStore(tmp_path / "messages")
        forwarder = Forwarder("n2", Link())
        a, b = Publisher(), Publisher()
        for _ in range(3):
            (a if first_released == "a" else b).publish(store, forwarder)
        for _ in range(3):
            (b if first_released == "a" else a).publish(store, forwarder)
        await asyncio.sleep(0)  # both rounds are waiting for the leader
        forwarder.peer_down()
        for _ in range(20):  # let every round finish
            await asyncio.sleep(0)
        assert a.acked == [] and b.acked == []
        assert sorted(a.nacked) == [1, 2, 3] and sorted(b.nacked) == [1, 2, 3]
        store.close()

    asyncio.run(run())
