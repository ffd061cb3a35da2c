"""How long does a compaction pass hold the event loop? (A benchmark, not a test.)

    python tests/streams_compaction/bench_compaction.py [--records N] [--keys K]

Fills a SegmentLog (16 MiB segments) with updates over K keys, then runs one pass the
threaded way (``run_async``) while a ticker measures the loop's worst wake-up lag and
appends keep flowing, and one pass all on the loop (``run``) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from smartbroker.store import SegmentLog  # noqa: E402
from smartbroker.store.compact import Compactor  # noqa: E402

SEGMENT = 16 << 20


def fill(path: str, records: int, keys: int) -> SegmentLog:
    log = SegmentLog(path, segment_bytes=SEGMENT, fsync="never")
    body = b"v" * 180
    for i in range(records):
        log.append(body, key=b"key-%d" % (i % keys))
    log.flush()
    return log


async def threaded_pass(log: SegmentLog) -> tuple[float, float, float, int]:
    """(loop seconds of the pass, worst ticker lag, total seconds, appends done meanwhile)."""
    compactor = Compactor(log)
    lag = 0.0
    appended = 0
    stop = False

    async def ticker() -> None:
        nonlocal lag, appended
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - t - 0.001)
            log.append(b"live", key=b"live")
            appended += 1

    tick = asyncio.ensure_future(ticker())
    result = await compactor.run_async()
    stop = True
    await tick
    return result.loop_seconds, lag, result.total_seconds, appended


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--keys", type=int, default=100_000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="compact-bench-")
    try:
        log = fill(os.path.join(root, "a"), args.records, args.keys)
        size = log.size_bytes
        loop_s, lag, total, appended = asyncio.run(threaded_pass(log))
        after = log.size_bytes
        log.close()
        log = fill(os.path.join(root, "b"), args.records, args.keys)
        t = time.perf_counter()
        Compactor(log).run()
        inline = time.perf_counter() - t
        log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.records:,} records over {args.keys:,} keys, {size / 2**20:.0f} MiB in "
          f"{SEGMENT >> 20} MiB segments -> {after / 2**20:.1f} MiB")
    print(f"threaded pass: {total * 1000:.0f} ms in all, {loop_s * 1000:.2f} ms on the loop, "
          f"worst loop wake-up lag {lag * 1000:.2f} ms, {appended} appends meanwhile")
    print(f"same pass all on the loop: {inline * 1000:.0f} ms pause")


if __name__ == "__main__":
    main()
