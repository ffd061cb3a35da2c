#!/usr/bin/env python3
"""In-process timings of a stream's per-message steps, the figures docs/performance.md
quotes for issue 14 ("streams over AMQP, second pass" and "fourth pass"):

    .venv/bin/python benchmarks/stream_micro.py

1. store frame encoding, 100 x 1 KiB: one single-record frame each vs one batch frame;
2. ``StreamQueue.publish`` of 1 KiB into an on-disk stream (fsync never, tail kept), the
   group framed and written out;
3. the tail's delivery messages for those publishes (``Tail.run``: the header splice);
4. ``Channel.deliver_run`` of 100 x 1 KiB first deliveries into a fake outbox.

Each is the best of several repeats of CPU time (``time.process_time``), so other work on
the machine inflates them less. No sockets: these isolate the code paths; run.py
measures the broker end to end.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from smartbroker.broker.channel import Channel
from smartbroker.message import Message
from smartbroker.queues.base import Storage
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_delivery import StreamEntry
from smartbroker.store import record

PAYLOAD = os.urandom(1100)
TS = 1_700_000_000_000


def best(fn: Callable[[], object], number: int, per: int) -> float:
    """Microseconds of CPU per item: the best of 7 repeats of ``number`` calls of ``per``."""
    return min(timeit.repeat(fn, number=number, repeat=7, timer=time.process_time)) / number / per * 1e6


def frames() -> tuple[float, float]:
    def singles() -> None:
        buf = bytearray()
        for i in range(100):
            record.encode_into(buf, i, TS, None, PAYLOAD)

    def batch() -> None:
        record.encode_batch(0, TS, [(None, PAYLOAD)] * 100)

    return best(singles, 500, 100), best(batch, 500, 100)


def publish(directory: Path) -> tuple[float, float]:
    args = {"x-queue-type": "stream", "x-partitions": 1}
    settings = StreamSettings.parse("s", "/", True, False, False, args)
    q = StreamQueue("s", "/", arguments=args, settings=settings,
                    storage=Storage(None, directory, fsync="never"))
    q.readers = {1: None}  # a reader attached: the tail is kept, as in a live stream
    q.dispatch = lambda: None  # no consumers to deliver to here
    first = Message.build("", "s", b"x" * 1024)
    # as from one connection: the route and header objects are interned, the bodies not
    msgs = [Message.routed(first.route, first.header_payload, os.urandom(1024), first.flags)
            for _ in range(1000)]
    lg, tail = q.logs[0], q._tails[0]

    def run() -> None:
        for m in msgs:
            q.publish(m)
        lg.write_out()  # frames the pass's group and hands it to the OS

    def splice() -> None:
        tail.built = [None] * len(tail.built)
        if not hasattr(tail, "run"):  # a tree before Tail.run (for A/B runs): one get each
            for offset in range(tail.base, tail.end):
                tail.get(offset)
            return
        for start in range(tail.base, tail.end, 100):
            tail.run(start, min(start + 100, tail.end))

    run()  # warm the page cache and the templates
    t = best(run, 10, 1000)
    tail.clear()
    run()
    s = best(splice, 10, len(tail.sources))
    q.close()
    return t, s


class _Outbox:
    frame_max = 131072

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write_many(self, parts: list[bytes]) -> None:
        self.out.extend(parts)


class _Consumer:
    tag_ss = b"\x05ctag1"
    no_ack = False
    unacked = 0


def deliver_run() -> float:
    ch = Channel.__new__(Channel)  # only what deliver_run touches
    ch.number, ch.conn, ch.unacked, ch.unacked_total, ch.delivery_tag = 1, _Outbox(), {}, 0, 0
    entries = [StreamEntry(Message.build("", "q", b"x" * 1024), 0, i, False, None)  # type: ignore[arg-type]
               for i in range(100)]
    consumer = _Consumer()

    def run() -> None:
        ch.deliver_run(consumer, None, entries)  # type: ignore[arg-type]
        ch.unacked.clear()
        ch.conn.out.clear()

    return best(run, 1000, 100)


def main() -> None:
    single, batched = frames()
    print(f"frame encoding, 1 KiB records: {single:.2f} us single frames, "
          f"{batched:.2f} us in one batch")
    gc.collect()
    with tempfile.TemporaryDirectory() as d:
        pub, splice = publish(Path(d))
    print(f"StreamQueue.publish, 1 KiB (framed, written out): {pub:.2f} us per message")
    print(f"Tail.run, the delivery header splice: {splice:.2f} us per message")
    print(f"Channel.deliver_run, 1 KiB: {deliver_run():.2f} us per delivery")


if __name__ == "__main__":
    main()
