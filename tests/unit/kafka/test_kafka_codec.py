"""smartbroker.kafka.codec: bytes in, objects out, and back; the frames as a client sends
and reads them (hand-written bytes where the layout is the point)."""

from __future__ import annotations

import struct
import uuid

import pytest

from smartbroker.kafka import codec


def api_versions_v3_request(correlation_id: int = 5) -> bytes:
    """ApiVersions v3 as librdkafka sends it: header v2 (client id as an int16 string,
    then an empty tagged-field section), body with compact strings and tagged fields."""
    header = struct.pack(">hhih", 18, 3, correlation_id, 7) + b"rdkafka" + b"\x00"
    body = b"\x0blibrdkafka" + b"\x062.0.2" + b"\x00"
    return header + body


def test_decode_api_versions_v0() -> None:
    payload = struct.pack(">hhih", 18, 0, 42, 3) + b"abc"
    req = codec.decode_request(payload)
    assert (req.api_key, req.api_version) == (18, 0)
    assert req.header == codec.Header(18, 0, 42, "abc")


def test_decode_api_versions_v3_flexible() -> None:
    req = codec.decode_request(api_versions_v3_request())
    assert req.header == codec.Header(18, 3, 5, "rdkafka")
    assert req.body.client_software_name == "librdkafka"
    assert req.body.client_software_version == "2.0.2"


def test_decode_metadata_null_client_id_and_topics() -> None:
    # Metadata v1: client id null (-1), topics array [1] "orders"
    payload = struct.pack(">hhih", 3, 1, 9, -1) + struct.pack(">ih", 1, 6) + b"orders"
    req = codec.decode_request(payload)
    assert req.header.client_id is None
    assert [t.name for t in req.body.topics] == ["orders"]


def test_metadata_v1_all_topics_is_null_array() -> None:
    payload = struct.pack(">hhih", 3, 1, 9, 1) + b"c" + struct.pack(">i", -1)
    assert codec.decode_request(payload).body.topics is None


@pytest.mark.parametrize("payload, match", [
    (b"\x00\x12\x00", "shorter than its header"),
    (struct.pack(">hhih", 18, 0, 1, 10) + b"abc", "client id truncated"),
    (struct.pack(">hhih", 999, 0, 1, -1), "unsupported api_key 999"),
    (struct.pack(">hhih", 3, 99, 1, -1), "unsupported api_key 3 version 99"),
    (struct.pack(">hhih", 3, 1, 1, -1) + struct.pack(">i", 5), "malformed Metadata"),
])
def test_decode_errors(payload: bytes, match: str) -> None:
    with pytest.raises(codec.DecodeError, match=match):
        codec.decode_request(payload)


def test_header_of_a_too_new_api_versions_is_readable() -> None:
    # ApiVersions v99: the body cannot be decoded, the header (v2) still can (KIP-511)
    payload = struct.pack(">hhih", 18, 99, 77, 2) + b"cl" + b"\x00" + b"junk"
    header, pos = codec.decode_header(payload)
    assert header == codec.Header(18, 99, 77, "cl")
    assert payload[pos:] == b"junk"


def test_encode_api_versions_v3_uses_header_v0() -> None:
    cls = codec.response_class(codec.API_VERSIONS)
    body = cls(version=3, error_code=0, throttle_time_ms=0,
               api_keys=[cls.ApiVersion(api_key=18, min_version=0, max_version=4)])
    frame = codec.encode_response(18, 3, 1234, body)
    size, corr = struct.unpack_from(">ii", frame)
    assert size == len(frame) - 4 and corr == 1234
    # header v0: the body follows the correlation id directly (no tagged-field byte)
    assert frame[8:10] == b"\x00\x00"  # error_code
    assert frame[10] == 2  # compact array of one entry
    assert frame[11:17] == struct.pack(">hhh", 18, 0, 4)


def test_api_versions_error_is_v0() -> None:
    frame = codec.api_versions_error(7, 35, [(18, 0, 4), (3, 0, 12)])
    assert frame == (struct.pack(">iih", len(frame) - 4, 7, 35) + struct.pack(">i", 2)
                     + struct.pack(">hhh", 18, 0, 4) + struct.pack(">hhh", 3, 0, 12))


def test_metadata_response_round_trip_every_version() -> None:
    cls = codec.response_class(codec.METADATA)
    topic = cls.MetadataResponseTopic
    part = topic.MetadataResponsePartition
    tid = uuid.uuid4()
    for version in range(0, 13):
        body = cls(version=version, throttle_time_ms=0, cluster_id="c", controller_id=0,
                   brokers=[cls.MetadataResponseBroker(node_id=0, host="h", port=9092, rack=None)],
                   topics=[topic(error_code=0, name="t", topic_id=tid, is_internal=False,
                                 partitions=[part(error_code=0, partition_index=0, leader_id=0,
                                                  leader_epoch=-1, replica_nodes=[0],
                                                  isr_nodes=[0], offline_replicas=[])])])
        frame = codec.encode_response(3, version, 11, body)
        decoded = cls.decode(frame[4:], version=version, header=True)
        assert decoded.brokers[0].port == 9092 and decoded.topics[0].name == "t"
        assert [p.isr_nodes for p in decoded.topics[0].partitions] == [[0]]
        if version >= 10:
            assert decoded.topics[0].topic_id == tid


def test_frame_size() -> None:
    assert codec.frame_size(b"\x00\x00") is None
    assert codec.frame_size(b"xx\x00\x00\x01\x00", 2) == 256


def test_record_batch_round_trip() -> None:
    batch = codec.write_batch([(1000, b"k1", b"v1", [("h", b"x")]), (1001, None, b"v2", [])],
                              base_offset=40)
    assert struct.unpack_from(">qi", batch) == (40, len(batch) - 12)
    assert batch[16] == 2  # magic
    records = codec.read_records(batch + batch)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (40, b"k1", b"v1"), (41, None, b"v2"), (40, b"k1", b"v1"), (41, None, b"v2")]
    assert records[0].headers == [("h", b"x")] and records[1].timestamp == 1001


def test_record_batch_crc_checked() -> None:
    batch = bytearray(codec.write_batch([(1, b"k", b"value", [])]))
    batch[-1] ^= 0xFF  # inside the CRC-covered part
    with pytest.raises(codec.DecodeError, match="CRC"):
        codec.read_records(bytes(batch))


def test_base_offset_is_outside_the_crc() -> None:
    # the broker rewrites baseOffset as it appends, and the batch stays valid
    batch = bytearray(codec.write_batch([(1, b"k", b"v", [])], base_offset=0))
    struct.pack_into(">q", batch, 0, 12345)
    assert [r.offset for r in codec.read_records(bytes(batch))] == [12345]
