"""Replication on the cluster link: two batched, credit-controlled channels and one call.

``APPEND`` leader -> follower: (epoch, data epoch, high watermark, log start, start, end,
log id, frames). ``epoch`` is the sender's leader epoch (the fencing token followers
check); ``data epoch`` the epoch that wrote these frames (chunks never span two), so a
follower's epoch checkpoints match the leader's; ``start``/``end`` the offsets the frames
continue from and reach (store/replica.py's ``Chunk``). No frames: a probe or a high
watermark update.

``ACK`` follower -> leader: (epoch, offset, code, log id): ``OK`` with the highest
durable offset (exclusive: the next one), ``MISMATCH`` with where the follower's log ends
(send from there), ``STALE`` with the higher epoch the follower has seen (the sender is
not leader any more), ``UNKNOWN`` (the log is not open here yet).

``repl.end_for_epoch`` (Kafka's OffsetsForLeaderEpoch): JSON {"log", "epoch"} -> {"epoch",
"end", "leader_epoch"}: the largest epoch <= the asked one the leader holds and where it
ends there. ``repl.end``: JSON {"log"} -> {"epoch", "end"}, a member's log end (to rank
candidates in an election).
"""

from __future__ import annotations

import json
from typing import Any

from smartbroker.cluster.link_codec import ChannelSpec

APPEND = ChannelSpec(40, "repl-append", "QQQQQQ", 2)
ACK = ChannelSpec(41, "repl-ack", "QQB", 1)
END_FOR_EPOCH = "repl.end_for_epoch"
LOG_END = "repl.end"

OK, MISMATCH, STALE, UNKNOWN = 0, 1, 2, 3


def dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def loads(raw: bytes) -> dict[str, Any]:
    """A call's JSON object; ValueError for anything else (answered as an error)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data
