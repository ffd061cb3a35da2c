"""Cluster fixtures: one real etcd per test session, on free loopback ports.

Tests that need etcd skip, with the reason, when the ``etcd`` binary is missing (Debian:
``apt-get install etcd-server``; ``.ci/run`` installs it). Each test gets its own cluster
name (``cluster_name``), hence its own key prefix, so tests sharing the one etcd never
see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary


@contextmanager
def private_etcd(directory: Path) -> Iterator[EtcdProcess]:
    """A started single-member etcd in ``directory`` (the test skips without the binary),
    stopped at the end, resumed first if a test left it frozen (SIGSTOP)."""
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    proc = EtcdProcess(directory).start()
    try:
        yield proc
    finally:
        if proc.alive():
            assert proc.proc is not None
            os.kill(proc.proc.pid, signal.SIGCONT)
        proc.stop()


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdProcess]:
    """A started single-member etcd for the whole session (``etcd.endpoint`` is its URL)."""
    tmp = Path(tempfile.mkdtemp(prefix="smartbroker-etcd-"))
    try:
        with private_etcd(tmp) as proc:
            yield proc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster_name() -> str:
    """A cluster name (key prefix) no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"
