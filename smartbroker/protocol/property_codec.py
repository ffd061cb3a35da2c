"""Content-header properties: a decoder that never raises on valid input, an encoder,
and byte-level edits that leave every untouched property as the publisher sent it.

Every path that reads a message some other client published (recovery, dead-lettering,
TTL, priority, headers routing, management, CLI) decodes through ``decode_properties``:
whatever ``properties.validate`` accepted at publish decodes here (no pamqp, no
recursion). Values pamqp cannot represent stay faithful: short strings that are not
UTF-8 are ``bytes``, timestamps are ``fields.Timestamp`` (the raw integer). Re-encoding
a decoded value gives back its bytes, except integer/float *types* inside tables, which
follow pamqp's choice; paths that rewrite headers (dead-lettering, ``x-delivery-count``)
therefore splice raw table entries (``table_entries``, ``replace_properties``) instead.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from pamqp import commands

from smartbroker.protocol import fields
from smartbroker.protocol.fields import FIXED_SIZES as _FIXED
from smartbroker.protocol.fields import Malformed, Timestamp

_SS, _TABLE, _OCTET, _TS = "shortstr", "table", "octet", "timestamp"
# (attribute name, flag bit, kind) in wire order
LAYOUT: tuple[tuple[str, int, str], ...] = (
    ("content_type", 15, _SS), ("content_encoding", 14, _SS), ("headers", 13, _TABLE),
    ("delivery_mode", 12, _OCTET), ("priority", 11, _OCTET), ("correlation_id", 10, _SS),
    ("reply_to", 9, _SS), ("expiration", 8, _SS), ("message_id", 7, _SS),
    ("timestamp", 6, _TS), ("message_type", 5, _SS), ("user_id", 4, _SS),
    ("app_id", 3, _SS), ("cluster_id", 2, _SS),
)
_u32 = struct.Struct("!I").unpack_from
_pack_u32 = struct.Struct("!I").pack
_SIZED = frozenset(b"SxFA")


def split_properties(header_payload: bytes) -> dict[str, bytes]:
    """Each present property's encoded bytes (length prefix included), by name."""
    data = header_payload
    if len(data) < 14:
        raise Malformed("content header too short")
    flags = (data[12] << 8) | data[13]
    out: dict[str, bytes] = {}
    pos = 14
    try:
        for name, bit, kind in LAYOUT:
            if not flags & (1 << bit):
                continue
            if kind == _SS:
                stop = pos + 1 + data[pos]
            elif kind == _TABLE:
                stop = pos + 4 + _u32(data, pos)[0]
            else:
                stop = pos + (1 if kind == _OCTET else 8)
            if stop > len(data):
                raise Malformed(f"property {name} overruns the header")
            out[name] = data[pos:stop]
            pos = stop
    except (IndexError, struct.error):
        raise Malformed("truncated property block") from None
    return out


def _shortstr(raw: bytes) -> str | bytes:
    text = raw[1:]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(text)


def decode_properties(header_payload: bytes) -> commands.Basic.Properties:
    """The properties as pamqp's ``Basic.Properties`` (for the many readers that expect
    one), decoded without pamqp. Raises ``Malformed`` only for bytes that never passed
    ``properties.validate`` (a damaged record)."""
    raw = split_properties(header_payload)
    props = commands.Basic.Properties.__new__(commands.Basic.Properties)
    for name, _bit, kind in LAYOUT:
        value = raw.get(name)
        if value is not None:
            if kind == _SS:
                value = _shortstr(value)
            elif kind == _TABLE:
                value = fields.decode_table(value)[0]
            elif kind == _OCTET:
                value = value[0]
            else:
                value = Timestamp(struct.unpack("!Q", value)[0])
        elif name == "cluster_id":
            value = ""
        setattr(props, name, value)
    return props


def _encode_shortstr(name: str, value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise Malformed(f"property {name} is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _encode_timestamp(value: Any) -> bytes:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        value = int(value.timestamp())
    return struct.pack("!Q", int(value) & 0xFFFFFFFFFFFFFFFF)


def encode_property(name: str, kind: str, value: Any) -> bytes:
    if kind == _SS:
        return _encode_shortstr(name, value)
    if kind == _TABLE:
        return fields.encode_table(value)
    if kind == _OCTET:
        return bytes((int(value) & 0xFF,))
    return _encode_timestamp(value)


def encode_properties(props: commands.Basic.Properties) -> bytes:
    """Flags + property values; ``None`` is absent, and so is pamqp's default empty
    ``cluster_id``. Raises ``Malformed`` for values that cannot be encoded."""
    flags = 0
    parts = []
    for name, bit, kind in LAYOUT:
        value = getattr(props, name, None)
        if value is None or (name == "cluster_id" and value == ""):
            continue
        flags |= 1 << bit
        parts.append(encode_property(name, kind, value))
    return struct.pack("!H", flags) + b"".join(parts)


def replace_properties(header_payload: bytes, changes: Mapping[str, bytes | None]) -> bytes:
    """A header payload with the named properties' encoded bytes replaced (``None``
    removes one); every other property is copied byte for byte."""
    raw = split_properties(header_payload)
    raw.update(changes)
    flags = 0
    parts = []
    for name, bit, _kind in LAYOUT:
        value = raw.get(name)
        if value is not None:
            flags |= 1 << bit
            parts.append(value)
    return header_payload[:12] + struct.pack("!H", flags) + b"".join(parts)


def table_entries(table: bytes) -> list[tuple[str, bytes]]:
    """A length-prefixed table's top-level entries as (key, raw entry bytes), values
    skipped by their sizes, never decoded."""
    out: list[tuple[str, bytes]] = []
    try:
        end = 4 + _u32(table, 0)[0]
        pos = 4
        while pos < end:
            key_end = pos + 1 + table[pos]
            kind = table[key_end]
            size = _FIXED.get(kind)
            stop = key_end + 1 + (size if size is not None else 4 + _u32(table, key_end + 1)[0])
            if kind not in _FIXED and kind not in _SIZED or stop > end:
                raise Malformed("bad table entry")
            out.append((fields.key_text(table[pos + 1:key_end]), table[pos:stop]))
            pos = stop
    except (IndexError, struct.error):
        raise Malformed("truncated table") from None
    return out


def array_elements(value: bytes) -> list[bytes]:
    """An array value's (u32 length + elements) raw elements, each tag + bytes."""
    out: list[bytes] = []
    try:
        end = 4 + _u32(value, 0)[0]
        pos = 4
        while pos < end:
            kind = value[pos]
            size = _FIXED.get(kind)
            stop = pos + 1 + (size if size is not None else 4 + _u32(value, pos + 1)[0])
            if kind not in _FIXED and kind not in _SIZED or stop > end:
                raise Malformed("bad array element")
            out.append(value[pos:stop])
            pos = stop
    except (IndexError, struct.error):
        raise Malformed("truncated array") from None
    return out


def entry_value(entry: bytes) -> tuple[int, bytes]:
    """(type tag, value bytes) of one raw table entry."""
    key_end = 1 + entry[0]
    return entry[key_end], entry[key_end + 1:]


def decode_value(kind: int, value: bytes) -> Any:
    """One raw value (after its tag) decoded, at any depth."""
    holder = fields.decode_fields(b"\x00" + bytes((kind,)) + value, 0, 2 + len(value), True)
    assert isinstance(holder, dict)
    return holder[""]


def join_table(entries: Iterable[bytes]) -> bytes:
    body = b"".join(entries)
    return _pack_u32(len(body)) + body


def entry(key: str, value: Any) -> bytes:
    """One table entry encoded from a Python value (pamqp's type choice)."""
    return fields.encode_fields({key: value})


def typed_entry(key: str, tag: bytes, payload: bytes) -> bytes:
    raw_key = fields.key_bytes(key)
    return bytes((len(raw_key),)) + raw_key + tag + payload


def longstr_entry(key: str, text: str | bytes) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return typed_entry(key, b"S", _pack_u32(len(raw)) + raw)
