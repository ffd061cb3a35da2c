"""The Kafka listener on the wire: pipelined requests answered in order, KIP-511 for a
too-new ApiVersions, connections closed (and nothing in the log but one line) for what
Kafka refuses, and a port in use as the same one-line startup error as for AMQP."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.kafka.wire import connect, frame, recv_frame

pytestmark = pytest.mark.extension


def api_versions(corr: int, version: int = 0) -> bytes:
    flexible = b"\x00" if version >= 3 else b""
    body = b"\x02c\x021\x00" if version >= 3 else b""
    return frame(struct.pack(">hhih", 18, version, corr, 1) + b"c" + flexible + body)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_answered_in_order(kafka_broker: BrokerProcess) -> None:
    with connect(kafka_broker) as sock:
        sock.sendall(b"".join(api_versions(corr, version=corr % 4) for corr in range(1, 9)))
        corrs = [struct.unpack_from(">i", recv_frame(sock))[0] for _ in range(8)]
    assert corrs == list(range(1, 9))


def test_too_new_api_versions_is_answered_with_35(kafka_broker: BrokerProcess) -> None:
    with connect(kafka_broker) as sock:
        sock.sendall(frame(struct.pack(">hhih", 18, 77, 5, 1) + b"c" + b"\x00\x00\x00"))
        reply = recv_frame(sock)
        assert struct.unpack_from(">ihi", reply) == (5, 35, 1)
        assert struct.unpack_from(">hhh", reply, 10) == (18, 0, 4)
        sock.sendall(api_versions(6))  # and the connection stays usable
        assert struct.unpack_from(">ih", recv_frame(sock)) == (6, 0)


@pytest.mark.parametrize("data", [
    struct.pack(">i", 100 * 1024 * 1024 + 1),  # over socket.request.max.bytes
    struct.pack(">i", -5),
    frame(struct.pack(">hhih", 0, 9, 1, -1)),  # Produce: not implemented yet
    frame(struct.pack(">hhih", 3, 1, 1, -1) + b"\x7f"),  # Metadata that does not parse
], ids=["oversized", "negative", "unsupported", "malformed"])
def test_refused_requests_close_the_connection(kafka_broker: BrokerProcess, data: bytes) -> None:
    with connect(kafka_broker) as sock:
        sock.sendall(api_versions(1) + data)
        assert struct.unpack_from(">i", recv_frame(sock))[0] == 1  # answered before it
        assert closed_by_peer(sock)
    with connect(kafka_broker) as sock:  # the listener is still serving
        sock.sendall(api_versions(2))
        assert struct.unpack_from(">i", recv_frame(sock))[0] == 2
    assert "closing Kafka connection" in kafka_broker.log()
    assert not kafka_broker.tracebacks()


def test_kafka_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
             "--port", str(free_port()), "--management-port", str(free_port()),
             "--prometheus-port", "0", "--kafka-port", str(port),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on 127.0.0.1:{port} (Kafka): ")


def test_graceful_stop_closes_kafka_connections(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", kafka=True).start()
    try:
        with connect(broker) as sock:
            sock.sendall(api_versions(1)[:6])  # half a request in flight
            assert broker.stop(timeout=10) == 0
            assert broker.stop_seconds < 5
            assert closed_by_peer(sock)
    finally:
        broker.kill()
    assert not broker.tracebacks()


def test_advertised_host_flag_is_what_metadata_names(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", kafka=True,
                           extra_args=["--kafka-advertised-host", "broker.example"]).start()
    try:
        with connect(broker) as sock:
            sock.sendall(frame(struct.pack(">hhih", 3, 1, 9, -1) + struct.pack(">i", 0)))
            reply = recv_frame(sock)
    finally:
        broker.stop()
    # correlation id, brokers [1]: node 0, host "broker.example", port
    head = struct.pack(">iiih", 9, 1, 0, len(b"broker.example")) + b"broker.example"
    assert reply[:len(head)] == head
    assert struct.unpack_from(">i", reply, len(head))[0] == broker.kafka_port
