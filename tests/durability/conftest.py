"""Helpers for the durability suite: a broker this test may stop, kill -9 and restart.

``sb`` wraps the ``own_broker`` fixture (tests/conftest.py) with what every durability
test needs: connect with pika, restart gracefully (and prove it was graceful), kill -9
and restart, drain a queue into a list of what a consumer sees, and call the management
HTTP API. Nothing here sleeps and hopes: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, assert_clean_log

TIMEOUT = 10.0


@dataclass
class Got:
    """One message as a consumer sees it."""

    body: bytes
    props: pika.BasicProperties
    redelivered: bool
    routing_key: str
    exchange: str


def pika_params(url: str, **kwargs: Any) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = TIMEOUT
    params.blocked_connection_timeout = TIMEOUT
    params.connection_attempts = 1
    for key, value in kwargs.items():
        setattr(params, key, value)
    return params


def poll(cond: Any, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Return ``cond()`` as soon as it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.01)


class Durable:
    """The test's private broker plus client helpers."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc

    # -- process control -------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def data_dir(self) -> Path:
        return self.proc.data_dir

    @property
    def messages_dir(self) -> Path:
        return self.proc.data_dir / "messages"

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def log(self) -> str:
        return self.proc.log()

    def log_since(self, mark: int) -> str:
        """Log text written after ``mark`` (a length returned by ``log_mark``)."""
        return self.log()[mark:]

    def log_mark(self) -> int:
        return len(self.log())

    def wait_ready(self) -> None:
        """AMQP answers as soon as recovery is done; the management API and the SIGTERM
        handler come up a moment later (a SIGTERM before that is not a graceful stop).
        An answered HTTP request means the startup code has run to its end."""
        self.proc.wait_serving(TIMEOUT)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), and check that it was one."""
        self.wait_ready()
        mark = self.log_mark()
        rc = self.proc.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM\n{self.log_since(mark)}"
        assert "stopped" in self.log_since(mark)

    def start(self) -> None:
        self.proc.start()  # returns once AMQP listens, i.e. recovery is done

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """kill -9: no shutdown code runs, buffers in the broker process are lost."""
        self.proc.kill()

    def kill_restart(self) -> None:
        self.kill()
        self.start()

    # -- AMQP ------------------------------------------------------------------------
    def connect(self, **kwargs: Any) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika_params(self.url, **kwargs))

    @staticmethod
    def keep_answering(conn: pika.BlockingConnection) -> threading.Thread:
        """Hand ``conn`` to a thread that keeps reading it, so the client answers the
        broker's connection.close at a graceful stop (as a live application would)
        instead of making it wait out its shutdown grace period. The test must not use
        ``conn`` afterwards."""
        def pump() -> None:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                while conn.is_open:
                    conn.process_data_events(time_limit=0.05)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def declare(self, queue: str, **kwargs: Any) -> None:
        conn = self.connect()
        try:
            conn.channel().queue_declare(queue, durable=kwargs.pop("durable", True), **kwargs)
        finally:
            conn.close()

    def publish(self, queue: str, bodies: list[bytes], exchange: str = "",
                persistent: bool = True, **props: Any) -> None:
        """Publish with confirms (each one confirmed before returning)."""
        conn = self.connect()
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for body in bodies:
                ch.basic_publish(exchange, queue, body, pika.BasicProperties(
                    delivery_mode=2 if persistent else 1, **props), mandatory=True)
        finally:
            conn.close()

    def message_count(self, queue: str) -> int:
        conn = self.connect()
        try:
            return conn.channel().queue_declare(queue, passive=True).method.message_count
        finally:
            conn.close()

    def queue_exists(self, queue: str) -> bool:
        conn = self.connect()
        try:
            conn.channel().queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
        finally:
            if conn.is_open:
                conn.close()

    def exchange_exists(self, exchange: str) -> bool:
        conn = self.connect()
        try:
            conn.channel().exchange_declare(exchange, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
        finally:
            if conn.is_open:
                conn.close()

    def drain(self, queue: str, timeout: float = TIMEOUT) -> list[Got]:
        """Everything in ``queue``, in delivery order, consumed and acked; the queue is
        left empty. A consumer (not basic.get loops) keeps thousands of messages fast."""
        conn = self.connect()
        try:
            ch = conn.channel()
            expected = ch.queue_declare(queue, passive=True).method.message_count
            out: list[Got] = []
            if expected:
                ch.basic_qos(prefetch_count=500)
                deadline = time.monotonic() + timeout
                for method, props, body in ch.consume(queue, inactivity_timeout=0.5):
                    if method is not None:
                        out.append(Got(body, props, method.redelivered, method.routing_key,
                                       method.exchange))
                        ch.basic_ack(method.delivery_tag)
                    if len(out) >= expected:
                        break
                    assert time.monotonic() < deadline, (
                        f"drained {len(out)} of {expected} messages within {timeout}s")
                ch.cancel()
            left = ch.queue_declare(queue, passive=True).method.message_count
            assert left == 0, f"{left} message(s) still in {queue} after draining {len(out)}"
            return out
        finally:
            conn.close()

    # -- management HTTP API ---------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None,
            user: str = "guest", password: str = "guest") -> tuple[int, Any]:
        self.wait_ready()
        return self._request(method, path, body, user, password)

    def _request(self, method: str, path: str, body: Any = None,
                 user: str = "guest", password: str = "guest") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.proc.management_port}/api{path}", data=data, method=method)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a module whose tests each bounce it themselves and look only at
    objects they named (``qname``/``uid``): a broker start and stop less per test."""
    with started_broker(tmp_path_factory.mktemp("durable") / "data") as proc:
        yield proc


@contextlib.contextmanager
def started_broker(data_dir: Path, **kwargs: Any) -> Iterator[BrokerProcess]:
    """A broker on ``data_dir`` (``kwargs`` go to ``BrokerProcess``, e.g. ``env``) as
    ``own_broker`` makes one: stopped, and its log checked, at the end."""
    if EXTERNAL_URL:
        pytest.skip("needs a smartbroker subprocess of its own")
    proc = BrokerProcess(data_dir=data_dir, **kwargs).start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


@pytest.fixture
def shared_sb(module_broker: BrokerProcess, request: pytest.FixtureRequest) -> Iterator[Durable]:
    """``sb`` on the module's broker, started again if a failed test left it down."""
    if not module_broker.alive():
        module_broker.start()
    yield from with_log_on_failure(module_broker, request)


@pytest.fixture
def sb(own_broker: Any, request: pytest.FixtureRequest) -> Iterator[Durable]:
    """The test's own broker (started), with durability helpers. A failing test shows the
    end of the broker's log (recovery lines included)."""
    yield from with_log_on_failure(own_broker, request)


def with_log_on_failure(proc: Any, request: pytest.FixtureRequest) -> Iterator[Durable]:
    """``proc`` as ``Durable``; the tail of its log printed if the test failed."""
    yield Durable(proc)
    if request.node.stash.get(_FAILED, False):
        print("---- broker log (tail) ----")
        print("\n".join(proc.log().splitlines()[-40:]))
