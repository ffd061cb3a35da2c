"""Hypothesis strategies for Kafka requests that decode: bytes built from the request's
own JSON schema (kafka-python ships Kafka's), field by field for the asked version, with
hostile values (negative counts and partitions, null where allowed, huge timeouts, topic
names of the broker's and nonsense, record batches that are valid or lie).

Written from the schema rather than through the library's encoder so that values the
library's encoder would refuse (a length it would never write) still reach the broker.
"""

from __future__ import annotations

import random
import struct
import uuid
from typing import Any

from hypothesis import strategies as st

from smartbroker.kafka import codec

INT_EDGES = {
    "int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint16": (0, 2**16 - 1),
}
_PACK = {"int8": ">b", "int16": ">h", "int32": ">i", "int64": ">q", "uint16": ">H"}
TOPICS = ["fuzz-a", "fuzz-b", "__consumer_offsets", "", ".", "a" * 250, "bad name", "t/x"]


def parse_versions(text: str | None) -> tuple[int, int]:
    """Kafka's version ranges: "0+", "3-13", "7", "none"."""
    if not text or text == "none":
        return (1, 0)  # empty
    if text.endswith("+"):
        return (int(text[:-1]), 2**15)
    if "-" in text:
        lo, hi = text.split("-")
        return (int(lo), int(hi))
    return (int(text), int(text))


def _in(version: int, text: str | None) -> bool:
    lo, hi = parse_versions(text)
    return lo <= version <= hi


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ints(kind: str) -> st.SearchStrategy[int]:
    lo, hi = INT_EDGES[kind]
    edges = sorted({lo, hi, 0, 1, 2, -1, min(hi, 1000), max(lo, -2)})
    small = st.integers(max(lo, -3), min(hi, 10))
    return st.one_of(st.sampled_from(edges), small, st.integers(lo, hi))


def batch_bytes() -> st.SearchStrategy[bytes]:
    """A records field: a valid v2 batch, one whose header lies, or junk."""
    record = st.tuples(st.integers(0, 2**41), st.none() | st.binary(max_size=8),
                       st.none() | st.binary(max_size=16),
                       st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=4)),
                                max_size=2))
    valid = st.builds(lambda recs, pid, seq: codec.write_batch(recs, producer_id=pid,
                                                               producer_epoch=0 if pid >= 0 else -1,
                                                               base_sequence=seq if pid >= 0 else -1),
                      st.lists(record, min_size=1, max_size=4), st.sampled_from([-1, 1, 2**40]),
                      st.integers(0, 5))

    def lie(data: bytes, at: int, value: int, fmt: str) -> bytes:
        buf = bytearray(data)
        size = struct.calcsize(fmt)
        at = at % max(len(buf) - size, 1)
        struct.pack_into(fmt, buf, at, value & (256**size - 1) if fmt[1].isupper() else value)
        return bytes(buf)

    # offsets in the v2 header: length 8, crc 17, attributes 21, record count 57
    lying = st.builds(lie, valid, st.sampled_from([8, 17, 21, 57, 61, 62]),
                      st.integers(-(2**15), 2**15 - 1), st.just(">h"))
    count_lie = st.builds(lambda d, n: d[:57] + struct.pack(">i", n) + d[61:], valid,
                          st.sampled_from([-1, 0, 2**31 - 1, 100_000]))
    return st.one_of(valid, lying, count_lie, st.binary(max_size=80))


class SchemaEncoder:
    """Draws the bytes of one request body for ``version`` of a request schema."""

    def __init__(self, schema: dict[str, Any], version: int) -> None:
        self.version = version
        self.flexible = _in(version, schema.get("flexibleVersions"))
        self.common = {s["name"]: s for s in schema.get("commonStructs", [])}
        self.fields = schema["fields"]

    def body(self, draw: Any) -> bytes:
        return self._struct(draw, self.fields)

    def _struct(self, draw: Any, fields: list[dict[str, Any]]) -> bytes:
        out = bytearray()
        for field in fields:
            if not _in(self.version, field.get("versions")):
                continue
            if field.get("taggedVersions") and _in(self.version, field["taggedVersions"]):
                continue  # tagged: left out (an empty tag buffer follows)
            out += self._field(draw, field)
        if self.flexible:
            out += b"\x00"
        return bytes(out)

    def _nullable(self, field: dict[str, Any]) -> bool:
        return _in(self.version, field.get("nullableVersions"))

    def _field(self, draw: Any, field: dict[str, Any]) -> bytes:
        kind: str = field["type"]
        nullable = self._nullable(field)
        if kind.startswith("[]"):
            inner = kind[2:]
            if nullable and draw(st.integers(0, 9)) == 0:
                return b"\x00" if self.flexible else struct.pack(">i", -1)
            n = draw(st.integers(0, 3))
            head = uvarint(n + 1) if self.flexible else struct.pack(">i", n)
            sub = field.get("fields") or self.common.get(inner, {}).get("fields")
            items = [self._struct(draw, sub) if sub is not None
                     else self._scalar(draw, inner, False, field) for _ in range(n)]
            return head + b"".join(items)
        sub = field.get("fields") or self.common.get(kind, {}).get("fields")
        if sub is not None:
            return self._struct(draw, sub)
        return self._scalar(draw, kind, nullable, field)

    def _scalar(self, draw: Any, kind: str, nullable: bool, field: dict[str, Any]) -> bytes:
        if kind in _PACK:
            return struct.pack(_PACK[kind], draw(ints(kind)))
        if kind == "bool":
            return bytes([draw(st.sampled_from([0, 1, 2, 255]))])
        if kind == "float64":
            return struct.pack(">d", draw(st.floats(allow_nan=True)))
        if kind == "uuid":
            return draw(st.sampled_from([bytes(16), uuid.uuid4().bytes, b"\xff" * 16]))
        if kind == "string":
            if nullable and draw(st.integers(0, 5)) == 0:
                return b"\x00" if self.flexible else struct.pack(">h", -1)
            text = draw(st.one_of(st.sampled_from(TOPICS), st.text(max_size=12)))
            if field.get("entityType") == "groupId" and draw(st.booleans()):
                text = "fuzz-group"
            raw = text.encode()
            return (uvarint(len(raw) + 1) if self.flexible else struct.pack(">h", len(raw))) + raw
        if kind in ("bytes", "records"):
            if nullable and draw(st.integers(0, 5)) == 0:
                return b"\x00" if self.flexible else struct.pack(">i", -1)
            raw = draw(batch_bytes() if kind == "records" else st.binary(max_size=40))
            return (uvarint(len(raw) + 1) if self.flexible else struct.pack(">i", len(raw))) + raw
        raise AssertionError(f"unknown schema type {kind}")


class WideRequest:
    """A schema-built request whose top-level arrays hold ``n`` items, values from a seeded
    ``random.Random`` (hypothesis cannot draw this much): a scale test for handlers that
    scan everything once per item. Names come from ``names``, so they hit real topics."""

    def __init__(self, api_key: int, version: int, n: int, names: list[str], seed: int = 1) -> None:
        schema = codec.REQUESTS[api_key]._json
        self.flexible = _in(version, schema.get("flexibleVersions"))
        self.common = {c["name"]: c for c in schema.get("commonStructs", [])}
        self.version, self.n, self.names, self.rng = version, n, names, random.Random(seed)
        self.body = self._struct(schema["fields"], top=True)

    def _struct(self, fields: list[dict[str, Any]], top: bool = False) -> bytes:
        out = bytearray()
        for f in fields:
            if not _in(self.version, f.get("versions")) or (
                    f.get("taggedVersions") and _in(self.version, f["taggedVersions"])):
                continue
            kind = f["type"]
            sub = f.get("fields") or self.common.get(kind.lstrip("[]"), {}).get("fields")
            if kind.startswith("[]"):
                n = self.n if top else self.rng.randint(1, 3)
                out += uvarint(n + 1) if self.flexible else struct.pack(">i", n)
                for _ in range(n):
                    out += self._struct(sub) if sub else self._scalar(kind[2:])
            else:
                out += self._struct(sub) if sub else self._scalar(kind)
        return bytes(out + (b"\x00" if self.flexible else b""))

    def _scalar(self, kind: str) -> bytes:
        rng = self.rng
        if kind in _PACK:
            lo, hi = INT_EDGES[kind]
            return struct.pack(_PACK[kind], max(lo, min(hi, rng.choice([0, 1, -1, rng.randint(0, 999)]))))
        if kind in ("bool", "int8"):
            return b"\x01"
        if kind == "float64":
            return struct.pack(">d", 1.0)
        if kind == "uuid":
            return uuid.UUID(int=rng.getrandbits(128)).bytes
        if kind in ("bytes", "records"):
            raw = codec.write_batch([(0, None, b"v", [])]) if kind == "records" else b"ab"
            return (uvarint(len(raw) + 1) if self.flexible else struct.pack(">i", len(raw))) + raw
        raw = rng.choice([rng.choice(self.names), f"x{rng.randint(0, 10**6)}"]).encode()
        return (uvarint(len(raw) + 1) if self.flexible else struct.pack(">h", len(raw))) + raw


def header(api_key: int, version: int, correlation_id: int, client_id: str = "fuzz") -> bytes:
    """A request header v1 (v2 with an empty tag buffer for flexible versions)."""
    raw = client_id.encode()
    head = struct.pack(">hhih", api_key, version, correlation_id, len(raw)) + raw
    return head + (b"\x00" if codec.is_flexible(api_key, version) else b"")


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@st.composite
def schema_request(draw: Any, api_key: int, version: int, correlation_id: int = 7) -> bytes:
    """One framed request of ``api_key``/``version`` whose body follows the schema."""
    schema = codec.REQUESTS[api_key]._json
    body = SchemaEncoder(schema, version).body(draw)
    return frame(header(api_key, version, correlation_id) + body)
