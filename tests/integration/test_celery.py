"""Celery on the broker: a worker process runs tasks; results come back over the RPC
backend (direct reply-to style reply queues); remote control (inspect ping) works."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

celery = pytest.importorskip("celery")


@pytest.fixture
def worker(broker, tmp_path: Path, uid: str):
    queue = f"celery-{uid}"
    url = broker.url
    (tmp_path / "celery_tasks.py").write_text(textwrap.dedent(f"""
        from celery import Celery
        app = Celery("celery_tasks", broker={url!r}, backend="rpc://")
        app.conf.task_default_queue = {queue!r}
        app.conf.broker_connection_retry_on_startup = True
        app.conf.worker_hijack_root_logger = False

        @app.task
        def add(x, y):
            return x + y
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-P", "solo",
         "--concurrency=1", "--loglevel=warning", "-n", f"w-{uid}@%h", "-Q", queue],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, str(tmp_path))
    try:
        import celery_tasks

        yield celery_tasks
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("celery_tasks", None)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_tasks_run_and_results_come_back(worker) -> None:
    assert worker.add.delay(2, 2).get(timeout=30) == 4
    results = [worker.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]


def test_remote_control_ping(worker) -> None:
    worker.add.delay(1, 1).get(timeout=30)  # the worker is up
    replies = worker.app.control.inspect(timeout=3).ping() or {}
    assert any(reply.get("ok") == "pong" for reply in replies.values())
