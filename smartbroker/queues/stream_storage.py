"""Where a stream's logs live: one directory per stream under ``<data dir>/streams``.

The directory name is a digest of vhost and name (any queue name is a safe path), with a
``name`` file saying whose it is; each partition is a ``SegmentLog`` in ``p<N>`` and the
group offsets in ``offsets``. Without storage (a broker with no data directory, unit tests)
every log is a ``MemoryLog``. The logs share the broker's fsync threads and file-handle
cache (``Storage.executors``) when it has them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from smartbroker.queues.base import Storage
from smartbroker.store.log import SegmentLog
from smartbroker.store.memory import MemoryLog


def stream_directory(storage: Storage | None, vhost: str, name: str) -> Path | None:
    """The stream's directory (made if missing), or None when logs stay in memory."""
    if storage is None:
        return None
    digest = hashlib.sha1(f"{vhost}\x00{name}".encode()).hexdigest()[:20]
    path = Path(storage.data_dir) / "streams" / digest
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(f"{vhost}\n{name}\n")
    return path


def open_log(directory: Path | None, storage: Storage | None, name: str,
             segment_bytes: int) -> Any:
    """One partition (or the offsets) log of a stream: on disk if it has a directory."""
    if directory is None or storage is None:
        return MemoryLog(segment_bytes=segment_bytes)
    executors = storage.executors
    if executors is None:
        return SegmentLog(directory / name, fsync=storage.fsync, segment_bytes=segment_bytes)
    return SegmentLog(directory / name, fsync=storage.fsync, segment_bytes=segment_bytes,
                      executor=executors.fsync, handles=executors.handles)
