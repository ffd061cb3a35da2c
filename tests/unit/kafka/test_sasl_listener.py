"""The listener and the sans-IO connection around SASL, through a fake transport: before
authentication only ApiVersions and SASL are served (anything else closes, frames are
bounded), raw tokens after a SaslHandshake v0, a refusal is answered then closed, and the
connection joins broker.connections as its user."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.kafka.listener import KafkaClientProtocol
from smartbroker.kafka.protocol import MAX_PRE_AUTH_SIZE
from tests.unit.kafka.listener_fakes import FakeTransport, correlation_ids, frame
from tests.unit.kafka.test_kafka_listener_adapter import api_versions, metadata_all


def handshake(mechanism: bytes, version: int, corr: int = 5) -> bytes:
    return frame(struct.pack(">hhih", 17, version, corr, -1)
                 + struct.pack(">h", len(mechanism)) + mechanism)


def authenticate(token: bytes, corr: int = 6) -> bytes:
    return frame(struct.pack(">hhih", 36, 0, corr, -1) + struct.pack(">i", len(token)) + token)


def connect(required: bool = True, peer: str = "127.0.0.1") -> tuple[KafkaClientProtocol, FakeTransport, Broker]:
    broker = Broker(Config(kafka_sasl_required=required))
    handlers = KafkaHandlers(broker, Node(None, 9092, "cid", "/"))
    proto = KafkaClientProtocol(handlers, set())
    transport = FakeTransport(peer, local="127.0.0.1")
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, broker


def run(test: Any) -> None:
    """The listener closes a refused login with call_later: a loop must be running."""
    async def main() -> None:
        test()
        await asyncio.sleep(0.15)
    asyncio.run(main())


def test_before_sasl_metadata_closes_the_connection() -> None:
    proto, t, broker = connect()
    proto.data_received(api_versions(1) + metadata_all(2))
    assert correlation_ids(b"".join(t.writes)) == [1] and t.closed
    assert broker.connections == {proto.record} and proto.record.vhost is None  # not listed


def test_before_sasl_frames_are_bounded() -> None:
    proto, t, _ = connect()
    proto.data_received(struct.pack(">i", MAX_PRE_AUTH_SIZE + 1))
    assert t.closed and not t.writes


def test_without_sasl_required_a_loopback_client_is_the_default_user() -> None:
    proto, t, broker = connect(required=False)
    proto.data_received(metadata_all(2))
    assert correlation_ids(b"".join(t.writes)) == [2] and not t.closed
    assert proto.session.user == "guest" and proto.record.user.name == "guest"
    proto, t, _ = connect(required=False, peer="10.9.8.7")  # guest is loopback-only
    assert proto.session.user is None
    proto.data_received(metadata_all(2))
    assert t.closed


def test_sasl_v1_then_everything_is_served() -> None:
    def test() -> None:
        proto, t, _ = connect()
        proto.data_received(handshake(b"PLAIN", 1) + authenticate(b"\0guest\0guest")
                            + metadata_all(7))
        assert correlation_ids(b"".join(t.writes)) == [5, 6, 7] and not t.closed
        assert proto.record.user.name == "guest" and proto.record.auth_mechanism == "PLAIN"
    run(test)


def test_a_refused_login_is_answered_then_closed_later() -> None:
    state: dict[str, Any] = {}

    def test() -> None:
        proto, t, _ = connect()
        proto.data_received(handshake(b"PLAIN", 1) + authenticate(b"\0guest\0nope")
                            + metadata_all(7))
        assert correlation_ids(b"".join(t.writes)) == [5, 6]  # Metadata never read
        assert not t.closed and t.paused  # Kafka's connection.failed.authentication.delay.ms
        state["t"] = t
    run(test)
    assert state["t"].closed


def test_raw_tokens_after_a_v0_handshake() -> None:
    def test() -> None:
        proto, t, _ = connect()
        proto.data_received(handshake(b"PLAIN", 0) + frame(b"\0guest\0guest") + metadata_all(7))
        data = b"".join(t.writes)
        size = struct.unpack_from(">i", data)[0]
        assert correlation_ids(data[:4 + size]) == [5]
        assert data[4 + size:8 + size] == b"\0\0\0\0"  # the empty PLAIN reply, raw
        assert correlation_ids(data[8 + size:]) == [7] and not t.closed
    run(test)


@pytest.mark.parametrize("token", [b"\0guest\0nope", b"garbage"])
def test_a_refused_raw_token_closes_without_an_answer(token: bytes) -> None:
    state: dict[str, Any] = {}

    def test() -> None:
        proto, t, _ = connect()
        proto.data_received(handshake(b"PLAIN", 0) + frame(token))
        assert correlation_ids(b"".join(t.writes)) == [5]
        state["t"] = t
    run(test)
    assert state["t"].closed
