"""Cluster fixtures: one real etcd per test session, on free loopback ports.

Tests that need etcd skip, with the reason, when the ``etcd`` binary is missing (Debian:
``apt-get install etcd-server``; ``.ci/run`` installs it). Each test gets its own cluster
name (``cluster_name``), hence its own key prefix, so tests sharing the one etcd never
see each other's keys.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdProcess]:
    """A started single-member etcd for the whole session (``etcd.endpoint`` is its URL)."""
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    tmp = Path(tempfile.mkdtemp(prefix="smartbroker-etcd-"))
    proc = EtcdProcess(tmp).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster_name() -> str:
    """A cluster name (key prefix) no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"
