"""A channel's confirm rounds: each waits for the logs its publishes went to, and a
replicated log's commit is waited for beside the next rounds, not before them.

A round takes the logs a waiter (a channel, or a peer's forwarded publishes) asked for
since the last one, waits for their fsync, then confirms up to its mark. On one node a
round is a group-commit fsync, and rounds run one after the other. A replicated log
(``CommittedSync``: a quorum queue, a replicated stream partition) has a second part,
the replica set's commit, a network round trip and a follower's fsync away. Waited for
inside the round, it held back the next round's local fsync as well: a publish arriving
meanwhile waited for the rest of that round, then a whole one of its own. So a round of
such a log ends with its local fsync (``begin``), its commit is waited for by a release
task, and the next round starts at once. Releases run in round order (``synced`` and
``sync_failed`` settle everything up to a mark), and at most ``IN_FLIGHT`` rounds wait
for commits at a time: a replica set that cannot commit holds back this waiter's
confirms, as before, not its memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

IN_FLIGHT = 8  # rounds of one waiter waiting for their commits at a time


class Waiter(Protocol):
    """Who asked for confirms: a channel, or a peer's forwarded publishes."""

    def sync_mark(self) -> int: ...
    def synced(self, mark: int) -> None: ...
    def sync_failed(self, mark: int) -> None: ...


async def serve(waiter: Waiter, next_logs: Callable[[], set[Any] | None],
                failed: Callable[[BaseException], None]) -> None:
    """Rounds for ``waiter`` until ``next_logs()`` has nothing (and every commit it
    waited for has released its round). ``failed`` logs a failure (rate-limited)."""
    releases: list[asyncio.Task[None]] = []
    while True:
        logs = next_logs()
        if not logs:
            if not releases:
                return
            await releases[-1]  # a round may ask for more meanwhile: look again
            releases.clear()
            continue
        mark = waiter.sync_mark()
        locals_: list[Awaitable[Any]] = []
        commits: list[Awaitable[Any]] = []
        for lg in logs:
            if getattr(lg, "written_only", False):  # streams' transient publishes
                lg.write_out()
            elif (begin := getattr(lg, "begin", None)) is not None:
                local, commit = begin()
                locals_.append(local)
                commits.append(commit)
            else:
                locals_.append(lg.sync())
        try:
            if len(locals_) == 1:
                await locals_[0]
            elif locals_:
                await asyncio.gather(*locals_)
        except Exception as exc:  # noqa: BLE001 - not known stored: nack, never a dead task
            for commit in commits:
                _drop(commit)
            failed(exc)
            await _after(releases)
            waiter.sync_failed(mark)
            continue
        releases = [r for r in releases if not r.done()]
        if not commits and not releases:
            waiter.synced(mark)
            continue
        if len(releases) >= IN_FLIGHT:
            await releases[0]
        previous = releases[-1] if releases else None
        releases.append(asyncio.get_running_loop().create_task(
            _release(previous, commits, waiter, mark, failed)))


async def _release(previous: asyncio.Task[None] | None, commits: list[Awaitable[Any]],
                   waiter: Waiter, mark: int, failed: Callable[[BaseException], None]) -> None:
    """Confirm up to ``mark`` once ``commits`` are done and the round before released."""
    try:
        if len(commits) == 1:
            await commits[0]
        elif commits:
            await asyncio.gather(*commits)
    except Exception as exc:  # noqa: BLE001 - leadership lost, too few replicas: a nack
        if previous is not None:
            await previous
        failed(exc)
        waiter.sync_failed(mark)
        return
    if previous is not None:
        await previous
    waiter.synced(mark)


async def _after(releases: list[asyncio.Task[None]]) -> None:
    if releases:
        await releases[-1]
        releases.clear()


def _drop(commit: Awaitable[Any]) -> None:
    """A commit no round will wait for: cancelled, its outcome never "not retrieved"."""
    if isinstance(commit, asyncio.Future):
        commit.cancel()
        commit.add_done_callback(lambda f: f.cancelled() or f.exception())
