"""smartbroker.kafka.protocol.KafkaConnection: framing, limits, refusals and response
order, without a socket."""

from __future__ import annotations

import struct

import pytest

from smartbroker.kafka import codec
from smartbroker.kafka.protocol import NEED_DATA, KafkaConnection, KafkaProtocolError
from tests.unit.kafka.listener_fakes import correlation_ids, frame

SUPPORTED = {18: (0, 4), 3: (0, 12)}


def api_versions(corr: int, version: int = 0) -> bytes:
    return frame(struct.pack(">hhih", 18, version, corr, 1) + b"c"
                 + (b"\x00\x02c\x021\x00" if version >= 3 else b""))


def metadata(corr: int, version: int = 1) -> bytes:
    return frame(struct.pack(">hhih", 3, version, corr, -1) + struct.pack(">i", -1))


def versions_body() -> object:
    cls = codec.response_class(18)
    return cls(version=0, error_code=0, api_keys=[])


def metadata_body() -> object:
    cls = codec.response_class(3)
    return cls(version=1, brokers=[], controller_id=0, topics=[])


def test_byte_at_a_time_then_two_in_one_read() -> None:
    conn = KafkaConnection(SUPPORTED)
    data = api_versions(1)
    for b in data[:-1]:
        conn.receive_data(bytes([b]))
        assert conn.next_request() is NEED_DATA
    conn.receive_data(data[-1:])
    req = conn.next_request()
    assert req is not NEED_DATA and req.header.correlation_id == 1
    conn.receive_data(api_versions(2) + metadata(3))
    assert [conn.next_request().header.correlation_id for _ in range(2)] == [2, 3]
    assert conn.next_request() is NEED_DATA
    assert conn.in_flight == 3


def test_responses_leave_in_request_order() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(api_versions(1) + metadata(2) + api_versions(3))
    first, second, third = (conn.next_request() for _ in range(3))
    assert conn.send_response(second, metadata_body()) == b""  # waits for the first
    assert conn.send_response(third, versions_body()) == b""
    out = conn.send_response(first, versions_body())
    assert correlation_ids(out) == [1, 2, 3]
    assert conn.in_flight == 0 and conn.data_to_send() == b""


def test_no_response_lets_later_ones_go() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(metadata(1) + metadata(2))
    first, second = conn.next_request(), conn.next_request()
    assert conn.send_response(second, metadata_body()) == b""
    assert correlation_ids(conn.no_response(first)) == [2]


def test_answering_twice_is_a_bug() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(metadata(1))
    req = conn.next_request()
    conn.send_response(req, metadata_body())
    with pytest.raises(ValueError):
        conn.send_response(req, metadata_body())


def test_too_new_api_versions_gets_unsupported_version_v0() -> None:
    conn = KafkaConnection(SUPPORTED)
    payload = struct.pack(">hhih", 18, 9, 55, 1) + b"c" + b"\x00" + b"anything at all"
    conn.receive_data(frame(payload) + api_versions(56))
    req = conn.next_request()  # the v9 one was answered by the connection itself
    assert req.header.correlation_id == 56
    out = conn.data_to_send()
    assert out == struct.pack(">iihi", 16, 55, 35, 1) + struct.pack(">hhh", 18, 0, 4)


def test_too_new_api_versions_waits_its_turn() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(metadata(1) + frame(struct.pack(">hhih", 18, 9, 2, -1) + b"\x00"))
    first = conn.next_request()
    assert conn.next_request() is NEED_DATA
    assert conn.data_to_send() == b""
    assert correlation_ids(conn.send_response(first, metadata_body())) == [1, 2]


@pytest.mark.parametrize("data, match", [
    (metadata(1, version=13), "api_key 3 version 13"),  # the codec knows it, we do not
    (frame(struct.pack(">hhih", 0, 9, 1, -1)), "api_key 0 version 9"),  # Produce: not yet
    (frame(struct.pack(">hhih", 999, 0, 1, -1)), "api_key 999"),
    (frame(b"\x00\x03"), "shorter than its header"),
    (frame(struct.pack(">hhih", 3, 1, 1, -1) + b"\x00"), "malformed"),
    (struct.pack(">i", -1), "-1 bytes"),
    (struct.pack(">i", 100 * 1024 * 1024 + 1), "over the limit of 104857600"),
])
def test_refusals_close(data: bytes, match: str) -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(data)
    with pytest.raises(KafkaProtocolError, match=match):
        conn.next_request()


def test_oversized_frame_refused_from_its_size_alone() -> None:
    conn = KafkaConnection(SUPPORTED, max_request_size=1000)
    conn.receive_data(struct.pack(">i", 1001) + b"\x00" * 10)  # no need to buffer 1001 bytes
    with pytest.raises(KafkaProtocolError, match="1001 bytes"):
        conn.next_request()


def test_eof() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(b"")
    assert conn.eof and conn.next_request() is NEED_DATA
