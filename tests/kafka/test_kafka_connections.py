"""Kafka connections in the management API: /api/connections lists them with RabbitMQ's
fields where they apply (protocol "Kafka", user, vhost, peer, client id, counters), and
DELETE /api/connections/{name} closes one."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.sasl_helpers import PASSWORD, add_user, api, wait_for
from tests.kafka.wire import frame, recv_frame

pytestmark = pytest.mark.extension


def api_versions(client_id: bytes, correlation: int = 1) -> bytes:
    """ApiVersions v0 with ``client_id``."""
    return frame(struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id)


def sasl_plain(user: str, password: str) -> bytes:
    """SaslHandshake v1 (PLAIN) and SaslAuthenticate v0 with the PLAIN token, pipelined."""
    mech = b"PLAIN"
    handshake = struct.pack(">hhih", 17, 1, 2, 1) + b"c" + struct.pack(">h", len(mech)) + mech
    token = b"\0" + user.encode() + b"\0" + password.encode()
    auth = struct.pack(">hhih", 36, 0, 3, 1) + b"c" + struct.pack(">i", len(token)) + token
    return frame(handshake) + frame(auth)


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-conns-") as proc:
        add_user(proc, "alice")
        yield proc


def _connect(proc: BrokerProcess, payload: bytes, replies: int) -> socket.socket:
    host, port = proc.kafka_bootstrap.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(payload)
    for _ in range(replies):
        recv_frame(sock)
    return sock


def _kafka_conns(proc: BrokerProcess, client_id: str) -> list[dict[str, Any]]:
    return [c for c in api(proc, "GET", "/connections").json()
            if c["protocol"] == "Kafka" and c["client_properties"].get("client_id") == client_id]


def test_a_kafka_connection_is_listed_and_closed_by_delete(broker: BrokerProcess) -> None:
    sock = _connect(broker, api_versions(b"listed-client"), 1)
    try:
        conns = wait_for(lambda: _kafka_conns(broker, "listed-client"))
        assert len(conns) == 1
        conn = conns[0]
        local = sock.getsockname()
        assert conn["name"] == f"{local[0]}:{local[1]} -> {broker.kafka_bootstrap}"
        assert (conn["user"], conn["vhost"]) == ("guest", "/")
        assert (conn["peer_host"], conn["peer_port"]) == (local[0], local[1])
        assert conn["auth_mechanism"] == "none" and conn["ssl"] is False
        assert conn["recv_oct"] > 0 and conn["send_oct"] > 0 and conn["connected_at"] > 0
        api(broker, "GET", f"/connections/{quote(conn['name'], safe='')}")
        api(broker, "DELETE", f"/connections/{quote(conn['name'], safe='')}")
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the broker
        assert wait_for(lambda: not _kafka_conns(broker, "listed-client"))
    finally:
        sock.close()


def test_a_sasl_connection_is_listed_as_its_user(broker: BrokerProcess) -> None:
    sock = _connect(broker, api_versions(b"sasl-client") + sasl_plain("alice", PASSWORD), 3)
    try:
        conns = wait_for(lambda: _kafka_conns(broker, "sasl-client"))
        assert [(c["user"], c["auth_mechanism"]) for c in conns] == [("alice", "PLAIN")]
    finally:
        sock.close()
