"""store/pathsync.py: fsyncs of new files batched on the fsync threads, and a new
stream's files made durable that way (queues/stream_storage.py)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smartbroker.queues.base import Storage
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_storage import LazyLog
from smartbroker.store import pathsync
from smartbroker.store.executors import Executors


def test_paths_queued_during_a_round_share_the_next_one(tmp_path: Path, monkeypatch) -> None:
    files = [tmp_path / f"f{i}" for i in range(6)]
    for f in files:
        f.write_text("x")
    synced: list[str] = []
    rounds = []
    gate = threading.Event()
    real_sync, real_round = pathsync.fsync_paths, pathsync.PathSync._round

    def recording(paths):
        gate.wait(5)
        real_sync(paths)
        synced.extend(os.fspath(p) for p in paths)

    def counting(self):
        rounds.append(1)
        real_round(self)

    monkeypatch.setattr(pathsync, "fsync_paths", recording)
    monkeypatch.setattr(pathsync.PathSync, "_round", counting)
    with ThreadPoolExecutor(1) as pool:
        syncer = pathsync.for_executor(pool)
        assert pathsync.for_executor(pool) is syncer
        first = syncer.submit([files[0], tmp_path])
        # the first round may or may not have started: either way what follows waits
        later = [syncer.submit([f, tmp_path]) for f in files[1:]]
        gate.set()
        for future in [first, *later]:
            assert future.result(5) is None
    assert sorted(p for p in synced if p != os.fspath(tmp_path)) == \
        sorted(os.fspath(f) for f in files)
    assert len(rounds) <= 2  # never one round per submit
    assert synced.count(os.fspath(tmp_path)) == len(rounds)  # a shared dir: once a round


def test_a_path_deleted_meanwhile_is_skipped_and_the_rest_synced(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A stream deleted before its round ran: its paths are gone, which is no error;
    another path's failure fails the round but the others are still fsynced."""
    kept = tmp_path / "kept"
    kept.write_text("x")
    synced: list[str] = []
    real = pathsync.fsync_paths

    def recording(paths):
        real(paths)
        synced.extend(os.fspath(p) for p in paths)

    monkeypatch.setattr(pathsync, "fsync_paths", recording)
    with ThreadPoolExecutor(1) as pool:
        syncer = pathsync.for_executor(pool)
        assert syncer.submit([tmp_path / "gone", kept]).result(5) is None
        assert os.fspath(kept) in synced
        (tmp_path / "notdir").write_text("x")
        with pytest.raises(NotADirectoryError):
            syncer.submit([tmp_path / "notdir" / "child", kept]).result(5)
    assert synced.count(os.fspath(kept)) == 2


def test_a_new_stream_is_fsynced_off_the_caller_and_reopens_the_same(tmp_path: Path) -> None:
    executors = Executors()
    storage = Storage(store=None, data_dir=tmp_path, fsync="batch", executors=executors)
    try:
        q = StreamQueue("s", "/", arguments={"x-queue-type": "stream"}, storage=storage)
        assert q.created is not None and q.created.result(5) is None
        assert {"meta.json", "name", "partitioner", "p0"} <= set(os.listdir(q.directory))
        assert isinstance(q.offsets.log, LazyLog) and not q.offsets.log.opened
        assert not (q.directory / "offsets").exists()  # no group ever committed
        topic_id = q.meta.topic_id
        q.close()
        again = StreamQueue("s", "/", arguments={"x-queue-type": "stream"}, storage=storage)
        assert again.created is None  # nothing new to make durable
        assert again.meta.topic_id == topic_id
        again.offsets.commit("g", 0, 5)  # the first commit creates the log
        assert (again.directory / "offsets").is_dir()
        again.close()
        third = StreamQueue("s", "/", arguments={"x-queue-type": "stream"}, storage=storage)
        assert third.offsets.get("g", 0) == 5
        third.close()
    finally:
        executors.shutdown()
