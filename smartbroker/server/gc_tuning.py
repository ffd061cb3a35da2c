"""The cyclic garbage collector, tuned for a broker's heap.

A broker allocates a few container objects per message (the message, its queue or
stream entry, the channel's unacked record) and keeps hundreds of thousands alive at
once (queues, stream tails, unacked maps). With CPython's default thresholds (700, 10,
10) a young collection runs every few hundred messages and an older one walks those live
objects over and over, though almost nothing the broker makes is cyclic garbage:
profiled, the collector's passes cost a fifth to a quarter of a stream delivery
(docs/performance.md, "Issue 14: streams over AMQP, second pass"). So: young collections every 20,000
allocations, older generations much less often, and everything alive once startup is
done (definitions, restored queues, imported modules) frozen out of the collector's
walks. Cycles are still collected, later.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 50, 1_000)


def tune_for_serving() -> None:
    """Set the thresholds now (before recovery builds the restored state)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_state() -> None:
    """Collect once, then keep what startup built out of every later collection."""
    gc.collect()
    gc.freeze()
