"""Kafka's flush.ms on a stream (kafka/stored_configs.py): kept in the stream's overrides,
it replaces the broker's idle fsync interval of the stream's partitions at once (what
waited for the old tick is fsynced now) and after a reopen; flush.messages=1 fsyncs
unwaited data once it is written out. The broker's interval here is a minute, so data
that becomes durable within seconds was fsynced because of the topic's setting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from smartbroker.queues.base import Storage
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_admin import set_overrides
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_storage import FLUSH_MESSAGES, FLUSH_MS, flush_interval_ms

MINUTE_MS = 60_000


def stream(tmp_path: Path, name: str) -> StreamQueue:
    storage = Storage(None, tmp_path, stream_flush_interval_ms=MINUTE_MS)
    return StreamQueue(name, "/", arguments={"x-partitions": 2},
                       settings=StreamSettings(partitions=2), storage=storage)


async def durable_soon(q: StreamQueue, partition: int, offset: int) -> bool:
    """Whether ``offset`` of ``partition`` becomes durable within 5 s (nobody waits)."""
    lg = q.logs[partition]
    deadline = time.monotonic() + 5
    while lg.durable_offset <= offset and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return lg.durable_offset > offset


def test_flush_interval_from_the_overrides() -> None:
    assert flush_interval_ms({}, 1000.0) == 1000.0
    assert flush_interval_ms({FLUSH_MS: 20}, 1000.0) == 20.0
    assert flush_interval_ms({FLUSH_MS: 0}, 1000.0) == 0.0
    assert flush_interval_ms({FLUSH_MESSAGES: 1, FLUSH_MS: 5000}, 1000.0) == 0.0
    assert flush_interval_ms({FLUSH_MESSAGES: 10}, 1000.0) == 1000.0  # a count: not acted on


def test_flush_ms_fsyncs_unwaited_data_on_its_own_tick(tmp_path: Path) -> None:
    fast, slow = stream(tmp_path, "fast"), stream(tmp_path, "slow")

    async def main() -> None:
        set_overrides(fast, {FLUSH_MS: 20}, None)
        for q in (fast, slow):
            for p in range(2):
                q.logs[p].append(b"nobody waits for me")
        assert await durable_soon(fast, 0, 0) and await durable_soon(fast, 1, 0)
        assert slow.logs[0].durable_offset == slow.logs[1].durable_offset == 0

    asyncio.run(main())
    fast.close()
    slow.close()
    again = stream(tmp_path, "fast")  # after a restart: from meta.json's overrides

    async def reopened() -> None:
        offset = again.logs[1].append(b"after the restart")
        assert await durable_soon(again, 1, offset)

    asyncio.run(reopened())
    again.close()


def test_lowering_flush_ms_fsyncs_what_waits_for_the_old_tick(tmp_path: Path) -> None:
    q = stream(tmp_path, "s")

    async def main() -> None:
        q.logs[0].append(b"waits a minute")
        data = tmp_path.rglob("p0/*.log")
        deadline = time.monotonic() + 5
        while sum(p.stat().st_size for p in data) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            data = tmp_path.rglob("p0/*.log")
        assert q.logs[0].durable_offset == 0  # written out, its fsync a minute away
        set_overrides(q, {FLUSH_MS: 10}, None)
        assert await durable_soon(q, 0, 0)

    asyncio.run(main())
    q.close()


def test_flush_messages_one_fsyncs_once_written_out(tmp_path: Path) -> None:
    q = stream(tmp_path, "s")

    async def main() -> None:
        set_overrides(q, {FLUSH_MESSAGES: 1}, None)
        for i in range(3):
            offset = q.logs[0].append(b"m%d" % i)
            assert await durable_soon(q, 0, offset)
        set_overrides(q, {}, None)  # back to the broker's minute
        offset = q.logs[0].append(b"late")
        await asyncio.sleep(0.2)
        assert q.logs[0].durable_offset == offset  # written out, not fsynced

    asyncio.run(main())
    q.close()
