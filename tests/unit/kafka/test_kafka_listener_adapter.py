"""smartbroker.kafka.listener.KafkaClientProtocol driven through a fake transport (no
socket, no loop): one write per read, closes on refusals and on a handler failure."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.kafka.listener import KafkaClientProtocol
from tests.unit.kafka.listener_fakes import FakeTransport, api_versions, frame


def metadata_all(corr: int) -> bytes:
    return frame(struct.pack(">hhih", 3, 1, corr, -1) + struct.pack(">i", -1))


@pytest.fixture
def proto() -> tuple[KafkaClientProtocol, FakeTransport, set[KafkaClientProtocol]]:
    handlers = KafkaHandlers(Broker(Config()), Node(None, 9092, "cid", "/"))
    connections: set[KafkaClientProtocol] = set()
    p = KafkaClientProtocol(handlers, connections)
    t = FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    return p, t, connections


def test_one_write_per_read_and_the_advertised_host(proto: Any) -> None:
    p, t, connections = proto
    assert p in connections and p.session.peer == "127.0.0.1:5555"
    p.data_received(api_versions(1) + metadata_all(2) + metadata_all(3)[:5])
    assert len(t.writes) == 1
    assert b"10.0.0.1" in t.writes[0]  # Metadata names the address the client used
    p.data_received(metadata_all(3)[5:])
    assert len(t.writes) == 2 and struct.unpack_from(">i", t.writes[1], 4) == (3,)
    p.connection_lost(None)
    assert p not in connections


def test_refusal_closes_after_what_was_answered(proto: Any, caplog: pytest.LogCaptureFixture) -> None:
    p, t, _ = proto
    with caplog.at_level(logging.INFO, "smartbroker.kafka"):
        p.data_received(api_versions(1) + struct.pack(">i", -1))
    assert t.closed and len(t.writes) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "closing Kafka connection 127.0.0.1:5555: request of -1 bytes is over the limit of "
        "104857600 bytes"]


def test_a_handler_failure_is_one_line_and_a_close(proto: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    p, t, _ = proto

    def broken(request: Any, session: Any) -> Any:
        raise RuntimeError("boom")

    p.handlers.table[3] = broken
    with caplog.at_level(logging.INFO, "smartbroker.kafka"):
        p.data_received(api_versions(1) + metadata_all(2))
    assert t.closed and len(t.writes) == 1
    (record,) = caplog.records
    assert record.getMessage() == "closing Kafka connection 127.0.0.1:5555: RuntimeError: boom"
    assert record.exc_info is None  # no traceback unless the log level is debug


def test_eof_closes(proto: Any) -> None:
    p, _, _ = proto
    assert p.eof_received() is False and p.conn.eof
