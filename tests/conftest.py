"""Shared fixtures: a real smartbroker subprocess on free ports, or an external broker.

Set SMARTBROKER_TEST_URL (e.g. amqp://guest:guest@localhost:5672/) to run the same tests
against another broker such as RabbitMQ; tests marked ``extension`` are then skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

EXTERNAL_URL = os.environ.get("SMARTBROKER_TEST_URL")
EXTERNAL_API = os.environ.get("SMARTBROKER_TEST_API")  # e.g. http://guest:guest@localhost:15672


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """Block until the port accepts connections (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited early with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"broker did not listen on {host}:{port} within {timeout}s")


@dataclass
class BrokerProcess:
    """A smartbroker started as a subprocess; restartable and killable for crash tests."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def api(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def start(self) -> BrokerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"broker-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        cmd = [
            sys.executable, "-m", "smartbroker", "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--management-port", str(self.management_port),
            "--data-dir", str(self.data_dir),
            "--log-level", "info",
            *(() if "--prometheus-port" in self.extra_args else ("--prometheus-port", "0")),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env})
        wait_for_port(self.host, self.port, self.proc)
        wait_for_port(self.host, self.management_port, self.proc)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def tracebacks(self) -> list[str]:
        """Each traceback in this broker's log, with the line before it (what was logged)."""
        lines = self.log().splitlines()
        return ["\n".join(lines[max(i - 1, 0):i + 25]) for i, line in enumerate(lines)
                if line.startswith("Traceback (most recent call last)")]


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
    tmp = Path(tempfile.mkdtemp(prefix="smartbroker-test-"))
    proc = BrokerProcess(data_dir=tmp / "data").start()
    try:
        yield BrokerInfo(proc.url, proc.host, proc.port, proc.api, False, proc)
    finally:
        proc.stop()
        try:
            assert_clean_log(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


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
