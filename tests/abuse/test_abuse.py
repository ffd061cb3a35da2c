"""Scripted abuse against a private broker process, over real sockets.

Each test: the abusive client gets RabbitMQ's answer (reply code, or the socket dropped),
the broker does not leak (open file descriptors and RSS of the broker process measured
before/after, with tolerant thresholds, once the broker has noticed the abusive client is
gone), and a normal pika client still works during and afterwards.

The broker runs with ``SMARTBROKER_HANDSHAKE_TIMEOUT=1`` so the half-open test is fast.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import body as pamqp_body
from pamqp import commands, frame, header, heartbeat

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.integration` needs the repository root importable
    sys.path.insert(0, str(ROOT))

from tests.integration.rawamqp import (  # noqa: E402
    PROTOCOL_HEADER,
    Closed,
    RawAMQP,
    content_header,
    raw_frame,
)

pytestmark = pytest.mark.extension

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


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------
def test_half_open_connections_closed_after_handshake_timeout(own_broker: Any, probe: Probe) -> None:
    """Sockets that connect and send nothing (or half a protocol header) are closed by the
    broker after the handshake timeout (1 s here), not before; no fd stays behind."""
    check_pika_works(own_broker)
    base_fds = probe.fds()
    socks = []
    with closing_all(socks):
        start = time.monotonic()
        for i in range(40):
            s = socket.create_connection((own_broker.host, own_broker.port))
            if i % 4 == 0:
                s.sendall(PROTOCOL_HEADER[:3])  # a partial header is still a half-open peer
            socks.append(s)
        poll(lambda: probe.fds() > base_fds, 5.0, "broker accepted the sockets")
        # meanwhile a normal client is served at once
        check_pika_works(own_broker, max_latency=0.9)
        for s in socks:
            assert peer_closed(s, timeout=5.0), "broker kept a half-open connection"
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 5.0, f"half-open sockets closed after {elapsed:.2f}s"
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)


def test_ten_thousand_channels_opened_and_closed(own_broker: Any, probe: Probe) -> None:
    """10,000 channel.open/close pairs on one connection (numbers reused below channel_max):
    every one is answered, and neither fds nor RSS grow."""
    client = raw_client(own_broker)
    with closing_all([client]):
        channel_max = client.channel_max or 2047

        def cycle(total: int, batch: int = 500) -> None:
            done = 0
            while done < total:
                numbers = [(done + i) % channel_max + 1 for i in range(min(batch, total - done))]
                client.send(b"".join(frame.marshal(commands.Channel.Open(), n)
                                     + frame.marshal(commands.Channel.Close(
                                         reply_code=200, reply_text="", class_id=0, method_id=0), n)
                                     for n in numbers))
                for n in numbers:
                    ch, value = client.read_frame(10)
                    assert (ch, type(value)) == (n, commands.Channel.OpenOk), (ch, value)
                    ch, value = client.read_frame(10)
                    assert (ch, type(value)) == (n, commands.Channel.CloseOk), (ch, value)
                done += len(numbers)

        cycle(1000)  # warm-up: allocator pools, code paths
        fds, rss = probe.fds(), probe.rss()
        start = time.monotonic()
        cycle(10_000)
        elapsed = time.monotonic() - start
        assert probe.fds() == fds
        growth = probe.rss() - rss
        assert growth < 16 * MB, f"RSS grew {growth / MB:.1f} MB over 10,000 channels"
        # the connection still works: a channel opens and a queue declares
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
    print(f"10,000 channel open/close: {elapsed:.2f}s, RSS growth {growth / MB:.2f} MB")
    check_pika_works(own_broker)


def test_consumer_prefetch_zero_never_acks(own_broker: Any, probe: Probe) -> None:
    """A consumer without prefetch limit that never acks gets all 20,000 messages pushed;
    the broker keeps serving others quickly, its RSS stays bounded, and when the consumer
    goes the messages are back in the queue."""
    n, size = 20_000, 512
    queue = f"abuse.noack.{uuid.uuid4().hex[:8]}"
    admin = pika_connect(own_broker)
    consumer = raw_client(own_broker)
    publisher = raw_client(own_broker)
    with closing_all([admin, consumer, publisher]):
        ach = admin.channel()
        ach.queue_declare(queue)
        rss0 = probe.rss()
        consumer.open_channel(1)
        consumer.send_frame(commands.Basic.Qos(prefetch_count=0), 1)
        consumer.expect(commands.Basic.QosOk)
        consumer.send_frame(commands.Basic.Consume(queue=queue, consumer_tag="hog"), 1)
        consumer.expect(commands.Basic.ConsumeOk)
        counter = FrameCounter(consumer)
        stop = threading.Event()

        def drain() -> None:  # read (and count) deliveries, never ack
            while not stop.is_set() and not counter.closed:
                counter.pump(0.2)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        publisher.open_channel(1)
        body = b"x" * size
        one = publish_frames(1, queue, body)
        latencies = []
        for _ in range(0, n, 1000):
            publisher.send(one * 1000)
            latencies.append(check_pika_works(own_broker, max_latency=3.0))
        # a round trip on the publisher proves the broker has routed all its publishes
        publisher.send_frame(commands.Basic.Qos(prefetch_count=0), 1)
        publisher.expect(commands.Basic.QosOk, timeout=20)
        poll(lambda: counter.count(commands.Basic.Deliver) >= n, 30.0,
             f"{n} deliveries (got {counter.count(commands.Basic.Deliver)})")
        rss_peak = probe.rss()
        growth = rss_peak - rss0
        print(f"prefetch 0, never acked: {n} x {size} B unacked, broker RSS +{growth / MB:.1f} MB, "
              f"max probe latency {max(latencies):.3f}s")
        assert growth < 150 * MB, f"RSS grew {growth / MB:.1f} MB for {n * size / MB:.0f} MB of messages"
        stop.set()
        consumer.close()
        reader.join(5)
        # the unacked messages are requeued once the broker notices the consumer is gone
        poll(lambda: ach.queue_declare(queue, passive=True).method.message_count == n, 10.0,
             "all unacked messages requeued")
        ach.queue_delete(queue)
    check_pika_works(own_broker)


def test_disconnect_mid_body_never_delivers_partial_message(own_broker: Any, probe: Probe) -> None:
    """A publisher that dies after half of a body: nothing reaches the queue, and the
    broker forgets the connection."""
    queue = f"abuse.midbody.{uuid.uuid4().hex[:8]}"
    admin = pika_connect(own_broker)
    with closing_all([admin]):
        ach = admin.channel()
        ach.queue_declare(queue)
        base_fds = probe.fds()
        for split in (0, 1, 500):  # after header / after 1 body byte / half the body
            client = raw_client(own_broker)
            client.open_channel(1)
            payload = b"p" * 1000
            client.send(frame.marshal(commands.Basic.Publish(routing_key=queue), 1)
                        + frame.marshal(content_header(len(payload)), 1)
                        + (frame.marshal(pamqp_body.ContentBody(payload[:split]), 1) if split else b""))
            # a round trip on another channel: the broker has read the partial publish
            client.send_frame(commands.Channel.Open(), 2)
            client.expect(commands.Channel.OpenOk)
            client.close()
        probe.wait_fds(base_fds)
        assert ach.queue_declare(queue, passive=True).method.message_count == 0
        ach.basic_publish("", queue, b"marker")
        method, _, got = poll(lambda: _get(ach, queue), 5.0, "marker message")
        assert got == b"marker"
        ach.basic_ack(method.delivery_tag)
        assert ach.basic_get(queue)[0] is None
        ach.queue_delete(queue)
    check_pika_works(own_broker)


@pytest.mark.parametrize("kind", ["heartbeat", "basic.qos"])
def test_tiny_frame_flood_does_not_starve_others(own_broker: Any, probe: Probe, kind: str) -> None:
    """100,000 tiny frames as fast as one client can send them: other connections still
    get timely answers, and the flooder gets every reply it is owed."""
    n = 100_000
    flooder = raw_client(own_broker)
    with closing_all([flooder]):
        flooder.open_channel(1)
        if kind == "heartbeat":
            unit = heartbeat.Heartbeat().marshal()
        else:
            unit = frame.marshal(commands.Basic.Qos(prefetch_count=7), 1)
        counter = FrameCounter(flooder)
        errors: list[BaseException] = []

        def read_replies() -> None:  # until the sentinel channel.open-ok after the flood
            deadline = time.monotonic() + 60
            while (counter.count(commands.Channel.OpenOk) < 1 and not counter.closed
                   and time.monotonic() < deadline):
                counter.pump(0.2)

        def send_flood() -> None:
            try:
                for _ in range(n // 1000):
                    flooder.send(unit * 1000)
                flooder.send(frame.marshal(commands.Channel.Open(), 2))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        reader = threading.Thread(target=read_replies, daemon=True)
        reader.start()
        sender = threading.Thread(target=send_flood, daemon=True)
        start = time.monotonic()
        sender.start()
        latencies = []
        while reader.is_alive():  # probe other clients for as long as the flood is processed
            latencies.append(check_pika_works(own_broker, max_latency=2.0))
        elapsed = time.monotonic() - start
        sender.join()
        assert not errors, errors
        assert counter.count(commands.Channel.OpenOk) == 1, "flooder's sentinel not answered"
        if kind == "basic.qos":
            got = counter.count(commands.Basic.QosOk)
            assert got == n, f"{got} of {n} qos-ok"
        assert not counter.closed, "the broker dropped the flooding connection"
    print(f"{n} {kind} frames processed in {elapsed:.2f}s: {len(latencies)} probes, "
          f"max latency {max(latencies):.3f}s")
    check_pika_works(own_broker)


def test_oversized_frame_is_501(own_broker: Any, probe: Probe) -> None:
    """A frame larger than the negotiated frame_max: connection.close 501 FRAME_ERROR, also
    when only the start of it has arrived; then the socket closes."""
    base_fds = probe.fds()
    for sent in (None, 8):  # the whole frame / header + one payload byte
        client = raw_client(own_broker, frame_max=4096)
        with closing_all([client]):
            client.open_channel(1)
            payload = struct.pack("!HH", 60, 40) + b"\x00" * 5000
            data = raw_frame(1, 1, payload)
            client.send(data[:sent])
            close = client.expect_connection_close(timeout=5)
            assert close.reply_code == 501, close
            assert client.wait_closed(5)
    # a body frame over the limit, inside a publish
    client = raw_client(own_broker, frame_max=4096)
    with closing_all([client]):
        client.open_channel(1)
        client.send(frame.marshal(commands.Basic.Publish(routing_key="nowhere"), 1)
                    + frame.marshal(content_header(10_000), 1)
                    + raw_frame(3, 1, b"b" * 10_000))
        close = client.expect_connection_close(timeout=5)
        assert close.reply_code == 501, close
        assert client.wait_closed(5)
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)


def test_oversized_frame_header_alone_is_501(own_broker: Any) -> None:
    client = raw_client(own_broker, frame_max=4096)
    with closing_all([client]):
        client.open_channel(1)
        client.send(struct.pack("!BHI", 1, 1, 5000))
        close = client.expect_connection_close(timeout=3)
        assert close.reply_code == 501, close


def test_heartbeats_stopped_connection_dropped(own_broker: Any, probe: Probe) -> None:
    """Negotiate heartbeat=1 and go silent: the broker sends heartbeats, then drops the
    connection within ~2-3 s; a client that keeps talking stays connected."""
    base_fds = probe.fds()
    silent = raw_client(own_broker, heartbeat=1)
    chatty = raw_client(own_broker, heartbeat=1)
    stop = threading.Event()

    def keep_talking() -> None:
        while not stop.wait(0.25):
            chatty.send(heartbeat.Heartbeat().marshal())

    talker = threading.Thread(target=keep_talking, daemon=True)
    talker.start()
    with closing_all([silent, chatty]):
        start = time.monotonic()
        got_heartbeat = False
        while True:
            try:
                _, value = silent.read_frame(timeout=max(0.01, start + 6 - time.monotonic()))
            except Closed:
                break
            got_heartbeat |= isinstance(value, heartbeat.Heartbeat)
        elapsed = time.monotonic() - start
        assert got_heartbeat, "the broker sent no heartbeat on a heartbeat=1 connection"
        assert 1.5 <= elapsed <= 3.5, f"silent client dropped after {elapsed:.2f}s"
        # the one that kept sending heartbeats is still connected
        stop.set()
        talker.join()
        chatty.send_frame(commands.Channel.Open(), 1)
        chatty.send_frame(commands.Basic.Qos(prefetch_count=1), 1)
        read_frames_until(chatty, lambda ch, v: isinstance(v, commands.Basic.QosOk), 5)
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)
