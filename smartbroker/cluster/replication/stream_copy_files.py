"""A removed stream replica's files: deleted, as Kafka deletes a removed replica's log.

Every node holds a replicated stream's ``StreamQueue`` (its partition logs are the
queue's), so the log object stays: it is emptied in place (``replica.reset``: every
segment unlinked, one empty segment at offset 0, fsynced), its epoch checkpoints go, and
the partition is served by nobody here. A later re-add starts from nothing, as a new
member does: the leader ships everything from its log start.
"""

from __future__ import annotations

import logging
from typing import Any

from smartbroker.cluster.spread_replicas import OFFSETS
from smartbroker.queues import stream_replicated
from smartbroker.store import replica
from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.cluster")


async def wipe(copies: Any, part: int | str) -> None:
    """Empty partition ``part``'s log (``OFFSETS``: the copy of the group offsets) of
    ``copies`` (a ``StreamCopies``) on this node, once at a time; never raises."""
    if part in copies.wiping:
        return
    copies.wiping.add(part)
    try:
        await _wipe(copies.stream, part, copies.real_offsets)
    finally:
        copies.wiping.discard(part)


async def _wipe(stream: Any, part: int | str, offsets_log: Any) -> None:
    lg = offsets_log if part == OFFSETS else stream.logs[int(part)]
    if not isinstance(lg, SegmentLog) or stream.deleted or stream.closed:
        return
    try:
        await replica.reset(lg, 0)
        replica.EpochCheckpoints(lg.directory).replace([])
        if isinstance(part, int):
            stream_replicated.follow(stream, part)
            if stream.meta.log_start.pop(part, None) is not None:
                stream.meta.save()
    except Exception as exc:  # noqa: BLE001 - a disk error: the copy stays, said once
        log.warning("removed replica %s of stream '%s' in vhost '%s' not deleted: %s",
                    part, stream.name, stream.vhost, exc)
        return
    log.info("removed replica %s of stream '%s' in vhost '%s' deleted",
             "of the group offsets" if part == OFFSETS else f"of partition {part}",
             stream.name, stream.vhost)


__all__ = ["wipe"]
