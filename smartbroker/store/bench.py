"""Storage micro-benchmark: ``python -m smartbroker.store.bench [--count N] [--size B]``.

Prints append throughput, confirm (sync) latency under concurrent publishers with the
chosen fsync policy, random-read cost, and reopen/recovery times (clean, after a crash,
and with every index file deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path

from .log import SegmentLog


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


async def confirms(log: SegmentLog, publishers: int, per: int, body: bytes) -> list[float]:
    """Each publisher appends and waits for its confirm, like a confirm-mode producer."""
    lat: list[float] = []

    async def pub() -> None:
        for _ in range(per):
            t = time.perf_counter()
            await log.wait_durable(log.append(body))
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(pub() for _ in range(publishers)))
    return lat


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200_000, help="records to write (1,000,000 for the big run)")
    ap.add_argument("--size", type=int, default=1024, help="payload bytes")
    ap.add_argument("--policy", default="batch", choices=["always", "batch", "never"])
    ap.add_argument("--publishers", type=int, default=50)
    ap.add_argument("--segment-mb", type=int, default=32)
    ap.add_argument("--dir", default=None, help="parent directory for the data (default: system temp)")
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sb-store-bench-", dir=a.dir))
    body = random.randbytes(a.size)
    kw = {"fsync": a.policy, "segment_bytes": a.segment_mb << 20}
    try:
        log = SegmentLog(root / "log", **kw)
        t0 = time.perf_counter()
        for _ in range(a.count):
            log.append(body)
        t1 = time.perf_counter()
        asyncio.run(log.sync())
        t2 = time.perf_counter()
        mb = a.count * a.size / 2**20
        print(f"append   {a.count:,} x {a.size} B: {a.count / (t1 - t0):,.0f} appends/s "
              f"({mb / (t1 - t0):,.0f} MiB/s); final sync {1000 * (t2 - t1):.1f} ms; "
              f"total {a.count / (t2 - t0):,.0f} records/s")

        per = max(1, min(a.count, 20_000) // a.publishers)
        fs0 = log.stats.fsyncs
        t = time.perf_counter()
        lat = asyncio.run(confirms(log, a.publishers, per, body))
        dt = time.perf_counter() - t
        n = a.publishers * per
        print(f"confirms {a.publishers} publishers, policy={a.policy}: {n / dt:,.0f} msg/s, "
              f"latency p50 {1000 * pct(lat, 0.5):.2f} ms, p99 {1000 * pct(lat, 0.99):.2f} ms, "
              f"{n / max(1, log.stats.fsyncs - fs0):.1f} records per fsync")

        offsets = [random.randrange(log.first_offset, log.next_offset) for _ in range(20_000)]
        t = time.perf_counter()
        for o in offsets:
            assert log.read(o) is not None
        dt = time.perf_counter() - t
        print(f"read     random offsets: {len(offsets) / dt:,.0f} reads/s ({1e6 * dt / len(offsets):.1f} us each)")
        total = log.next_offset
        log.close()

        def reopen(label: str) -> None:
            t = time.perf_counter()
            lg = SegmentLog(root / "log", **kw)
            dt = time.perf_counter() - t
            assert lg.next_offset == total, (lg.next_offset, total)
            print(f"recover  {label}: {1000 * dt:,.1f} ms for {total:,} records in {lg.segment_count} segments")
            lg.close()

        reopen("clean shutdown")
        tail = sorted((root / "log").glob("*.idx"))[-1]
        tail.unlink()  # what a crash leaves: no index saved for the active segment
        reopen("after crash (tail segment scanned)")
        for idx in (root / "log").glob("*.idx"):
            idx.unlink()
        reopen("all index files deleted (full scan)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
