"""Issue 12: the message store reclaims mostly-acked segments behind a parked message
(store/reclaim.py), and recovery after any number of rewrites gives the same messages."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from smartbroker.broker.durable import MessageStore
from smartbroker.message import Message
from smartbroker.store.log import COMPACT_SUFFIX

SEG = 16 * 1024
BODY = b"b" * 500


def message(body: bytes) -> Message:
    return Message.build("", "q", body)


async def reclaim_all(store: MessageStore) -> None:
    """What the reclaimer's timer does, without waiting for it. The timer's own pass may
    run meanwhile (these tests outlast INTERVAL): reclaim() calls take turns, which
    test_store_reclaim_races.py checks interleaving by interleaving."""
    store.write_out_now()
    await store.log.sync()
    for seg in store.reclaimer.candidates():
        await store.reclaimer.reclaim(seg)


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix == ".log")


def test_parked_message_no_longer_pins_the_acked_traffic(tmp_path: Path) -> None:
    async def run() -> int:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        parked = store.enqueue("/", ("A",), message(b"parked"))
        for i in range(4000):  # ~2 MiB through queue B, each acked
            off = store.enqueue("/", ("B",), message(BODY))
            store.delivered("/", "B", off)
            store.forget("/", "B", off)
            if i % 100 == 99:
                await reclaim_all(store)
        unacked = [store.enqueue("/", ("B",), message(b"left-%d" % i)) for i in range(3)]
        store.delivered("/", "B", unacked[0])
        await reclaim_all(store)
        assert disk_bytes(tmp_path) < 4 * SEG  # was ~2 MiB: everything behind `parked`
        assert store.reclaimer.stats.segments_rewritten + store.reclaimer.stats.segments_deleted > 10
        await store.aclose()
        return parked

    parked = asyncio.run(run())
    store = MessageStore(tmp_path, segment_bytes=SEG)
    got = {k: [(e.offset, e.redelivered) for e in v] for k, v in store.recover().items()}
    assert got[("/", "A")] == [(parked, False)]
    assert [r for _, r in got[("/", "B")]] == [True, False, False]
    assert [store.load(o).body for o, _ in got[("/", "B")]] == [b"left-0", b"left-1", b"left-2"]
    assert store.load(parked).body == b"parked"
    store.close()


def test_shared_message_stays_for_the_queue_that_holds_it(tmp_path: Path) -> None:
    async def run() -> int:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        shared = store.enqueue("/", ("A", "B"), message(b"shared"))
        store.forget("/", "B", shared)  # B acked it, A did not
        for _ in range(2000):
            off = store.enqueue("/", ("B",), message(BODY))
            store.forget("/", "B", off)
        await reclaim_all(store)
        await reclaim_all(store)
        assert disk_bytes(tmp_path) < 4 * SEG
        await store.aclose()
        return shared

    shared = asyncio.run(run())
    store = MessageStore(tmp_path, segment_bytes=SEG)
    got = store.recover()
    assert [e.offset for e in got[("/", "A")]] == [shared]
    assert ("/", "B") not in got  # its forget mark was kept while the enqueue is on disk
    store.close()


def test_random_traffic_recovers_as_the_model_after_every_restart(tmp_path: Path) -> None:
    rnd = random.Random(12)
    queues = ["A", "B", "C"]

    async def run() -> None:
        store = MessageStore(tmp_path, segment_bytes=SEG)
        model: dict[str, dict[int, list]] = {q: {} for q in queues}
        rewritten = 0
        for step in range(6000):
            r = rnd.random()
            if r < 0.4:
                qs = tuple(q for q in queues if rnd.random() < 0.5) or ("B",)
                body = b"%d-" % step + BODY[: rnd.randrange(10, 400)]
                off = store.enqueue("/", qs, message(body))
                for q in qs:
                    model[q][off] = [body, False]
            else:
                q = rnd.choice(queues)
                if not model[q]:
                    continue
                off = rnd.choice(list(model[q])[:20])  # mostly old ones: FIFO-ish consumers
                if r < 0.55:
                    store.delivered("/", q, off)
                    model[q][off][1] = True
                elif q != "A" or rnd.random() < 0.05:  # A is a slow consumer
                    store.forget("/", q, off)
                    del model[q][off]
            if step % 97 == 0:
                await reclaim_all(store)
            if step % 1500 == 1499:
                rewritten += store.reclaimer.stats.segments_rewritten
                await store.aclose()
                assert not list(tmp_path.glob("*" + COMPACT_SUFFIX))
                store = MessageStore(tmp_path, segment_bytes=SEG)
                got = store.recover()
                for q in queues:
                    entries = got.get(("/", q), [])
                    assert [(e.offset, e.redelivered) for e in entries] == \
                        [(o, d) for o, (_b, d) in sorted(model[q].items())]
                    assert [store.load(e.offset).body for e in entries] == \
                        [b for _o, (b, _d) in sorted(model[q].items())]
        assert rewritten > 0
        await store.aclose()

    asyncio.run(run())
