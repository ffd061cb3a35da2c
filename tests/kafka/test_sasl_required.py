"""kafka_sasl_required (Kafka's SASL_PLAINTEXT listener): a client without SASL gets
ApiVersions only and cannot produce (its Metadata closes the connection); with SASL it
produces as its user."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.sasl_helpers import (
    PASSWORD,
    add_user,
    confluent_produce,
    confluent_sasl,
    topic_name,
)

pytestmark = pytest.mark.extension
# ApiVersions v0 then Metadata v0 (all topics), client id "t", correlation ids 1 and 2
API_VERSIONS_V0 = struct.pack(">ihhih", 11, 18, 0, 1, 1) + b"t"
METADATA_V0 = struct.pack(">ihhih", 15, 3, 0, 2, 1) + b"t" + struct.pack(">i", 0)


@pytest.fixture(scope="module")
def required_broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-sasl-required-",
                   extra_args=["--kafka-sasl-required"]) as proc:
        add_user(proc, "alice")
        yield proc


def _read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_before_sasl_only_api_versions_is_answered(required_broker: BrokerProcess) -> None:
    host, port = required_broker.kafka_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(API_VERSIONS_V0 + METADATA_V0)
        data = _read_until_eof(sock)  # ApiVersions answered, then closed at Metadata
    size, correlation = struct.unpack(">ii", data[:8])
    assert correlation == 1 and len(data) == 4 + size
    assert "before SASL authentication; SASL authentication is required" in required_broker.log()


def test_a_client_without_sasl_cannot_produce(required_broker: BrokerProcess) -> None:
    config = {"bootstrap.servers": required_broker.kafka_bootstrap}
    delivered, _ = confluent_produce(config, topic_name(), [b"x"], timeout=3)
    assert delivered and delivered[0] is not None  # timed out undelivered


def test_a_client_with_sasl_produces(required_broker: BrokerProcess) -> None:
    config = confluent_sasl(required_broker.kafka_bootstrap, "SCRAM-SHA-512", "alice", PASSWORD)
    assert confluent_produce(config, topic_name(), [b"x"])[0] == [None]


def test_guest_with_sasl_from_loopback_may_produce(required_broker: BrokerProcess) -> None:
    """Required SASL takes away the implicit default user, not the user: guest logs in."""
    config = confluent_sasl(required_broker.kafka_bootstrap, "PLAIN", "guest", "guest")
    assert confluent_produce(config, topic_name(), [b"x"])[0] == [None]
