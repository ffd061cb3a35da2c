"""Unit checks of what a replicated quorum queue's failover leans on in forwarding.

A group-commit round takes its publishers' marks, then asks each log (a forwarder) to
``sync``. A publish forwarded after the marks but before the round's coroutine first
ran belongs to the NEXT round; if the leader is then lost, that next round must fail
(nack), not confirm a publish the dead leader never confirmed (kill -9 of a quorum
queue's leader under a pipelining publisher lost confirmed messages this way).
"""

from __future__ import annotations

import asyncio

import pytest

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
