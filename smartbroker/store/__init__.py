"""smartbroker's storage engine: one segment-log engine for durable queues and streams,
plus a small SQLite store for definitions.

``SegmentLog`` (on disk) and ``MemoryLog`` (in memory) implement the ``Log`` contract.
"""

from .api import FSYNC_POLICIES, FsyncPolicy, Log, LogStats, Record, SegmentInfo, StoreUnavailable
from .log import SegmentLog
from .memory import MemoryLog

__all__ = [
    "FSYNC_POLICIES",
    "FsyncPolicy",
    "Log",
    "LogStats",
    "MemoryLog",
    "Record",
    "SegmentInfo",
    "SegmentLog",
    "StoreUnavailable",
]
