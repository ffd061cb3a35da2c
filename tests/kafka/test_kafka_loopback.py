"""Without SASL a Kafka client acts as the default user, under its loopback rule: with the
defaults (guest, loopback-only) a client from another address is served ApiVersions and
SASL only (it may authenticate as another user), and dropped at any other request, as
RabbitMQ refuses guest over AMQP from another address (tests/security/test_loopback.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.conftest import EXTERNAL_URL, non_loopback_address, running_broker

pytestmark = pytest.mark.extension

# Metadata v0 for every topic: size, api_key 3, version 0, correlation id 7, client id "t",
# an empty topic array
METADATA_V0 = struct.pack(">ihhih", 15, 3, 0, 7, 1) + b"t" + struct.pack(">i", 0)


def _ask(address: str, port: int) -> bytes:
    """Send Metadata from ``address`` to the broker; what comes back before EOF."""
    with socket.create_connection((address, port), timeout=10,
                                  source_address=(address, 0)) as sock:
        sock.sendall(METADATA_V0)
        data = b""
        while len(data) < 8:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with our request unread: a reset
                break
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("loopback_users, remote_answered", [('["guest"]', False), ("[]", True)])
def test_a_kafka_client_without_sasl_is_guest_from_loopback_only(
        loopback_users: str, remote_answered: bool) -> None:
    if EXTERNAL_URL:
        pytest.skip("the Kafka listener is smartbroker's own")
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with running_broker("smartbroker-kafka-loopback-", kafka=True,
                        extra_args=["--host", "0.0.0.0"],
                        env={"SMARTBROKER_LOOPBACK_USERS": loopback_users}) as proc:
        local = _ask("127.0.0.1", proc.kafka_port)
        assert struct.unpack(">ii", local[:8])[1] == 7  # answered: correlation id 7
        remote = _ask(address, proc.kafka_port)
        if remote_answered:
            assert struct.unpack(">ii", remote[:8])[1] == 7
        else:
            assert remote == b""  # dropped without an answer
            assert "refusing Kafka connection from" in proc.log()
