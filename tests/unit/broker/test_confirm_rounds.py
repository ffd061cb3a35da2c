"""Confirm rounds (broker/confirm_rounds.py): a replicated log's commit is waited for
beside the next rounds, and still every confirm and nack goes out in publish order."""

from __future__ import annotations

import asyncio
from typing import Any

from smartbroker.broker import confirm_rounds


class Channel:
    """What a channel does with rounds: settles everything up to a mark, in order."""

    def __init__(self) -> None:
        self.seq = 0
        self.settled: list[tuple[str, int]] = []

    def sync_mark(self) -> int:
        return self.seq

    def synced(self, mark: int) -> None:
        self.settled.append(("ack", mark))

    def sync_failed(self, mark: int) -> None:
        self.settled.append(("nack", mark))


class LocalLog:
    """A log on one node: a sync is a (quick) group-commit fsync."""

    async def sync(self) -> None:
        await asyncio.sleep(0)


class ReplicatedLog:
    """A log whose rounds end with the local fsync; each commit is released by the test."""

    def __init__(self) -> None:
        self.commits: list[asyncio.Future[None]] = []

    def begin(self) -> tuple[Any, asyncio.Future[None]]:
        commit = asyncio.get_running_loop().create_future()
        self.commits.append(commit)
        return LocalLog().sync(), commit


async def rounds(channel: Channel, asks: list[set[Any]], failures: list[BaseException]
                 ) -> asyncio.Task[None]:
    """Serve ``channel``; each ask is one round's logs (publishes of 10 seqs each)."""
    pending = list(asks)

    def next_logs() -> set[Any] | None:
        if not pending:
            return None
        channel.seq += 10
        return pending.pop(0)

    return asyncio.get_running_loop().create_task(
        confirm_rounds.serve(channel, next_logs, failures.append))


def test_later_rounds_go_on_while_a_commit_waits_and_settle_in_order() -> None:
    async def run() -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
        channel, rlog, failures = Channel(), ReplicatedLog(), []
        task = await rounds(channel, [{rlog}, {rlog}, {rlog}], failures)
        while len(rlog.commits) < 3:  # all three rounds started: none waited for a commit
            await asyncio.sleep(0)
        rlog.commits[2].set_result(None)
        rlog.commits[1].set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
        early = list(channel.settled)  # the first round's commit still waits
        rlog.commits[0].set_result(None)
        await task
        return early, channel.settled, len(failures)

    early, settled, failures = asyncio.run(run())
    assert early == []
    assert settled == [("ack", 10), ("ack", 20), ("ack", 30)]
    assert failures == 0


def test_a_failed_commit_nacks_its_round_alone() -> None:
    async def run() -> tuple[list[tuple[str, int]], list[BaseException]]:
        channel, rlog, failures = Channel(), ReplicatedLog(), []
        task = await rounds(channel, [{rlog}, {rlog}, {LocalLog()}], failures)
        while len(rlog.commits) < 2:
            await asyncio.sleep(0)
        rlog.commits[1].set_result(None)
        rlog.commits[0].set_exception(RuntimeError("leader lost"))
        await task
        return channel.settled, failures

    settled, failures = asyncio.run(run())
    assert settled == [("nack", 10), ("ack", 20), ("ack", 30)]
    assert [str(f) for f in failures] == ["leader lost"]


def test_rounds_waiting_for_commits_are_bounded() -> None:
    async def run() -> tuple[int, list[tuple[str, int]]]:
        channel, rlog = Channel(), ReplicatedLog()
        count = confirm_rounds.IN_FLIGHT + 5
        task = await rounds(channel, [{rlog} for _ in range(count)], [])
        for _ in range(50):
            await asyncio.sleep(0)
        started = len(rlog.commits)  # no commit came: the rounds stop at the bound
        for commit in list(rlog.commits):
            commit.set_result(None)
        while not task.done():
            for commit in rlog.commits:
                if not commit.done():
                    commit.set_result(None)
            await asyncio.sleep(0)
        return started, channel.settled

    started, settled = asyncio.run(run())
    assert started == confirm_rounds.IN_FLIGHT + 1
    assert settled == [("ack", 10 * i) for i in range(1, confirm_rounds.IN_FLIGHT + 6)]
