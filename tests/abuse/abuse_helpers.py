"""Helpers and fixtures for the scripted abuse tests (``test_abuse_*.py``) against a private
broker process, over real sockets: a /proc resource probe of the broker, a pika probe that a
normal client still works, raw AMQP clients and fast frame counting for floods.

The broker runs with ``SMARTBROKER_HANDSHAKE_TIMEOUT=1`` (the autouse fixture below, which
the test modules import) so the half-open test is fast.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.integration` needs the repository root importable
    sys.path.insert(0, str(ROOT))

# the raw client's names the test modules use are re-exported from here
from tests.integration.rawamqp import (  # noqa: E402
    PROTOCOL_HEADER as PROTOCOL_HEADER,
)
from tests.integration.rawamqp import (  # noqa: E402
    Closed as Closed,
)
from tests.integration.rawamqp import (  # noqa: E402
    RawAMQP,
)
from tests.integration.rawamqp import (  # noqa: E402
    content_header as content_header,
)
from tests.integration.rawamqp import (  # noqa: E402
    raw_frame as raw_frame,
)

MB = 1024 * 1024


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fast_handshake_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse fixtures run before ``own_broker`` starts: the broker inherits this env."""
    monkeypatch.setenv("SMARTBROKER_HANDSHAKE_TIMEOUT", "1")


def poll(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(interval)


class Probe:
    """Resource usage of the broker process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def wait_fds(self, at_most: int, timeout: float = 5.0) -> int:
        """Poll until the broker holds at most ``at_most`` fds (it noticed closed peers)."""
        poll(lambda: self.fds() <= at_most, timeout,
             f"broker fds <= {at_most} (now {self.fds()})")
        return self.fds()


@pytest.fixture
def probe(own_broker: Any) -> Iterator[Probe]:
    """Resource probe of the broker; afterwards its log must show no 541 (internal error)
    and no traceback."""
    yield Probe(own_broker.proc.pid)
    log = own_broker.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]


def pika_connect(broker: Any) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def check_pika_works(broker: Any, max_latency: float = 2.0) -> float:
    """A normal client connects, declares, publishes and gets its message back; returns
    the wall time it took (must be under ``max_latency``)."""
    start = time.monotonic()
    conn = pika_connect(broker)
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = uuid.uuid4().bytes
        ch.basic_publish("", q, body)
        method, _, got = poll(lambda: _get(ch, q), 5.0, "message back from pika probe")
        assert got == body
        ch.basic_ack(method.delivery_tag)
    finally:
        conn.close()
    elapsed = time.monotonic() - start
    assert elapsed < max_latency, f"a normal client took {elapsed:.2f}s"
    return elapsed


def _get(ch: Any, q: str) -> Any:
    method, props, body = ch.basic_get(q)
    return (method, props, body) if method is not None else None


def raw_client(broker: Any, **handshake: Any) -> RawAMQP:
    client = RawAMQP(broker.host, broker.port)
    client.handshake(**handshake)
    return client


def peer_closed(sock: socket.socket, timeout: float) -> bool:
    """True once the broker closed the socket (EOF or reset); frames read are dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def publish_frames(channel: int, routing_key: str, body: bytes, exchange: str = "") -> bytes:
    return (frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel)
            + frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), channel)
            + (frame.marshal(pamqp_body.ContentBody(body), channel) if body else b""))


@contextlib.contextmanager
def closing_all(items: list[Any]) -> Iterator[list[Any]]:
    try:
        yield items
    finally:
        for item in items:
            with contextlib.suppress(Exception):
                item.close()


class FrameCounter:
    """Reads a raw client's socket fast (no per-frame copies), counting method frames by
    (class_id, method_id); for floods where RawAMQP.read_frame would be quadratic."""

    def __init__(self, client: RawAMQP) -> None:
        self.sock = client.sock
        self.buf = bytearray(client.buf)
        client.buf = b""
        self.counts: dict[tuple[int, int], int] = {}
        self.closed = False

    def pump(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.buf += chunk
        pos, end = 0, len(self.buf)
        view = memoryview(self.buf)
        while end - pos >= 8:
            ftype, _, size = struct.unpack_from("!BHI", view, pos)
            if end - pos < size + 8:
                break
            if ftype == 1:
                key = struct.unpack_from("!HH", view, pos + 7)
                self.counts[key] = self.counts.get(key, 0) + 1
            pos += size + 8
        view.release()
        del self.buf[:pos]

    def count(self, cls: type) -> int:
        return self.counts.get((cls.index >> 16, cls.index & 0xFFFF), 0)


def read_frames_until(client: RawAMQP, done: Callable[[int, Any], bool], timeout: float) -> int:
    """Read frames until ``done(channel, frame)`` returns True; returns frames read."""
    deadline = time.monotonic() + timeout
    count = 0
    while True:
        channel, value = client.read_frame(max(0.01, deadline - time.monotonic()))
        count += 1
        if done(channel, value):
            return count
