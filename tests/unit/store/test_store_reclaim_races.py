"""The reclaimer's worker thread against the loop (store/reclaim.py): a head segment
deleted by the store while a pass was about to read it, and two passes over one segment.

Both were behind the intermittent FileNotFoundError in test_store_reclaim.py: the
reclaimer's own timer fired (INTERVAL) while the test drove passes by hand. The custom
executors below make each interleaving happen every time instead of 1 run in 3.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from smartbroker.broker.durable import MessageStore
from smartbroker.message import Message
from smartbroker.store import reclaim
from smartbroker.store.log import COMPACT_SUFFIX

SEG = 16 * 1024
BODY = b"b" * 500


@pytest.fixture(autouse=True)
def no_timer_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the passes a test starts run: the reclaimer's timer would add one of its own
    at a moment of the scheduler's choosing (a slow fsync under load is enough)."""
    monkeypatch.setattr(reclaim, "INTERVAL", 3600.0)


def message(body: bytes) -> Message:
    return Message.build("", "q", body)


class InlineExecutor(Executor):
    """Runs each job at once on the caller's thread, after the next of ``before`` (called
    on the loop, as ``run_in_executor`` submits from there): the loop's moment just
    before a worker thread would start."""

    def __init__(self, *before: Callable[[], None] | None) -> None:
        self.before = list(before)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        step = self.before.pop(0) if self.before else None
        if step is not None:
            step()
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            fut.set_exception(e)
        return fut


class GatedExecutor(Executor):
    """One thread per job; the first job waits for ``gate``. Counts jobs running at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.running = self.most = 0
        self._lock = threading.Lock()
        self._first = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        first, self._first = self._first, False

        def work() -> None:
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            self.started.set()
            if first:
                self.gate.wait(10)
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                fut.set_exception(e)
            finally:
                with self._lock:
                    self.running -= 1

        threading.Thread(target=work, daemon=True).start()
        return fut


async def two_segments_half_acked(store: MessageStore) -> tuple[list[int], int]:
    """Messages over at least two closed segments; 3 in 4 of the head's acked, so the head
    is a reclaim candidate. Returns (the head's unacked offsets, the head's base)."""
    offsets = [store.enqueue("/", ("B",), message(BODY)) for _ in range(3 * SEG // len(BODY))]
    head = store.log.segments()[0]
    in_head = [o for o in offsets if o < head.next_offset]
    left = in_head[::4]
    for o in in_head:
        if o not in left:
            store.forget("/", "B", o)
    store.write_out_now()
    await store.log.sync()
    assert [s.base for s in store.reclaimer.candidates()][:1] == [head.base_offset]
    return left, head.base_offset


def test_head_segment_deleted_before_the_thread_opens_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The last live messages of the segment a pass is about to read are acked: the store
    deletes it (MessageStore._reclaim). The pass must skip it quietly, not fail the pass
    with a FileNotFoundError traceback."""

    async def run() -> list[int]:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        left, base = await two_segments_half_acked(store)

        def ack_the_rest() -> None:  # on the loop, just before the worker thread would start
            for o in left:
                store.forget("/", "B", o)
            store.write_out_now()
            assert store.log.segment_of(left[0]) is None  # the store deleted the head

        store.reclaimer.executor = InlineExecutor(ack_the_rest)
        seg = store.reclaimer.candidates()[0]
        assert seg.base == base
        assert await store.reclaimer.reclaim(seg) is False
        assert base not in store.reclaimer.done  # no note kept for a segment that is gone
        assert not list(tmp_path.glob("*" + COMPACT_SUFFIX))
        await store.aclose()
        return left

    with caplog.at_level(logging.ERROR, logger="smartbroker.store"):
        left = asyncio.run(run())
    assert not caplog.records
    store = MessageStore(tmp_path, segment_bytes=SEG)
    assert ("/", "B") in store.recover()  # the later segments' messages, nothing else
    assert all(store.log.segment_of(o) is None for o in left)
    store.close()


def test_rewritten_segment_deleted_while_the_directory_is_fsynced(tmp_path: Path) -> None:
    """The store deletes the freshly installed segment (its last enqueues acked) while
    the pass fsyncs the directory: the pass must not note it as still there."""

    async def run() -> None:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        left, base = await two_segments_half_acked(store)

        def ack_the_rest() -> None:
            for o in left:
                store.forget("/", "B", o)
            store.write_out_now()

        store.reclaimer.executor = InlineExecutor(None, ack_the_rest)  # rewrite, dir fsync
        assert await store.reclaimer.reclaim(store.reclaimer.candidates()[0]) is True
        assert store.reclaimer.stats.segments_rewritten == 1
        assert store.log.segments()[0].base_offset != base
        assert base not in store.reclaimer.kept and base not in store.reclaimer.done
        await store.aclose()

    asyncio.run(run())


def test_two_passes_over_one_segment_take_turns(tmp_path: Path) -> None:
    """A pass started by hand while the timer's pass rewrites the same segment: the two
    must not write ``<base>.log.compact`` at once (one would rename the other's half-written
    file in, or keep writing into the live segment after the rename)."""

    async def run() -> list[int]:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        left, _base = await two_segments_half_acked(store)
        gated = store.reclaimer.executor = GatedExecutor()
        seg = store.reclaimer.candidates()[0]
        first = asyncio.ensure_future(store.reclaimer.reclaim(seg))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 10)
        second = asyncio.ensure_future(store.reclaimer.reclaim(seg))
        for _ in range(20):  # let the second get as far as it can while the first is held
            await asyncio.sleep(0)
        gated.gate.set()
        results = await asyncio.gather(first, second)
        assert gated.most == 1
        assert sorted(results) == [False, True]
        assert store.reclaimer.stats.segments_rewritten == 1
        assert not list(tmp_path.glob("*" + COMPACT_SUFFIX))
        await store.aclose()
        return left

    left = asyncio.run(run())
    store = MessageStore(tmp_path, segment_bytes=SEG)
    got = [e.offset for e in store.recover()[("/", "B")]]
    assert got[: len(left)] == left
    assert [store.load(o).body for o in left] == [BODY] * len(left)
    store.close()
