"""Shared fixtures: a real smartbroker subprocess on free ports, or an external broker.

Set SMARTBROKER_TEST_URL (e.g. amqp://guest:guest@localhost:5672/) to run the same tests
against another broker such as RabbitMQ; tests marked ``extension`` are then skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

# The broker subprocess helper lives in the package (shared with the benchmarks and the
# demo); re-exported here because many tests import it from tests.conftest.
from smartbroker.launcher import BrokerProcess, free_port, wait_for_port

__all__ = ["BrokerProcess", "assert_clean_log", "free_port", "non_loopback_address",
           "running_broker", "wait_for_port"]

EXTERNAL_URL = os.environ.get("SMARTBROKER_TEST_URL")
EXTERNAL_API = os.environ.get("SMARTBROKER_TEST_API")  # e.g. http://guest:guest@localhost:15672


def assert_clean_log(proc: BrokerProcess) -> None:
    """Nothing a client sends may reach the broker log as a traceback (issue 12): every test
    broker's log is checked when its fixture ends. Set SMARTBROKER_TEST_ALLOW_TRACEBACKS=1
    to only report them."""
    found = proc.tracebacks()
    if not found:
        return
    report = f"broker log {proc.log_path} holds {len(found)} traceback(s); the first:\n{found[0]}"
    if os.environ.get("SMARTBROKER_TEST_ALLOW_TRACEBACKS"):
        sys.stderr.write(report + "\n")
        return
    pytest.fail(report, pytrace=False)


@contextlib.contextmanager
def running_broker(prefix: str = "smartbroker-test-", **kwargs: Any) -> Iterator[BrokerProcess]:
    """A started broker subprocess in a fresh temporary directory (``kwargs`` go to
    ``BrokerProcess``); stopped, its log checked for tracebacks, and removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    proc = BrokerProcess(tmp / "data", **kwargs).start()
    try:
        yield proc
    finally:
        proc.stop()
        try:
            assert_clean_log(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def non_loopback_address() -> str | None:
    """This machine's outward IPv4 address (to connect from somewhere that is not
    loopback), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@dataclass
class BrokerInfo:
    url: str
    host: str
    port: int
    api: str | None
    external: bool
    process: BrokerProcess | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not EXTERNAL_URL:
        return
    skip = pytest.mark.skip(reason="smartbroker extension; SMARTBROKER_TEST_URL targets another broker")
    for item in items:
        if "extension" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerInfo]:
    """One broker per test session (per xdist worker)."""
    if EXTERNAL_URL:
        u = urlparse(EXTERNAL_URL)
        yield BrokerInfo(EXTERNAL_URL, u.hostname or "localhost", u.port or 5672, EXTERNAL_API, True)
        return
    with running_broker() as proc:
        yield BrokerInfo(proc.url, proc.host, proc.port, proc.api, False, proc)


@pytest.fixture
def broker_url(broker: BrokerInfo) -> str:
    return broker.url


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A private broker this test may stop, restart or kill -9 (smartbroker only)."""
    if EXTERNAL_URL:
        pytest.skip("needs a smartbroker subprocess of its own")
    proc = BrokerProcess(data_dir=tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


@pytest.fixture
def uid() -> str:
    """A short unique suffix so tests never collide on a shared (or external) broker."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def qname(uid: str, request: pytest.FixtureRequest) -> str:
    return f"test.{request.node.name[:40]}.{uid}"
