"""AMQP field tables and arrays, decoded and encoded without recursion and without loss.

pamqp recurses once per nesting level (a table nested a few hundred deep is a
RecursionError), turns timestamps into ``datetime`` (raising past the year 9999) and
table keys into ``str`` (raising on non-UTF-8). Everything ``properties.validate``
accepts is valid on the wire (RabbitMQ forwards it), so this codec decodes all of it,
with an explicit stack, into values that encode back to the same bytes where the type
is unambiguous:

* ``T`` -> ``Timestamp`` (an ``int``: the raw 64-bit value, whatever its unit);
* ``S`` -> ``str`` when UTF-8, else ``bytes``; table keys -> ``str`` with
  ``surrogateescape`` for non-UTF-8 bytes (``key_bytes`` gets them back);
* integers -> ``int`` (re-encoded with pamqp's smallest-type rule), ``f``/``d`` ->
  ``float``, ``D`` -> ``Decimal``, ``x`` -> ``bytearray``, ``V`` -> ``None``.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Mapping
from typing import Any

from pamqp import encode as pamqp_encode


class Malformed(ValueError):
    """The bytes are not a field table/array (never raised for validated input)."""


class Timestamp(int):
    """An AMQP timestamp kept as its raw 64-bit value (seconds by the spec; clients put
    milliseconds or microseconds here too, which ``datetime`` cannot hold)."""

    def as_datetime(self) -> datetime.datetime | None:
        """The time in UTC, if it is one ``datetime`` can represent."""
        try:
            return datetime.datetime.fromtimestamp(int(self), tz=datetime.UTC)
        except (OverflowError, OSError, ValueError):
            return None


_u8 = struct.Struct("!B").unpack_from
_u32 = struct.Struct("!I").unpack_from
_pack_u32 = struct.Struct("!I").pack
_SCALARS: dict[int, tuple[int, Any]] = {
    ord("b"): (1, struct.Struct("!b").unpack_from), ord("B"): (1, _u8),
    ord("s"): (2, struct.Struct("!h").unpack_from), ord("u"): (2, struct.Struct("!H").unpack_from),
    ord("I"): (4, struct.Struct("!i").unpack_from), ord("i"): (4, _u32),
    ord("l"): (8, struct.Struct("!q").unpack_from), ord("L"): (8, struct.Struct("!q").unpack_from),
    ord("f"): (4, struct.Struct("!f").unpack_from), ord("d"): (8, struct.Struct("!d").unpack_from),
}
_u64 = struct.Struct("!Q").unpack_from
# payload size of every fixed-size field type, by tag (0 = void, as pamqp also reads it);
# the validator and the raw-entry walkers of property_codec share this one table
FIXED_SIZES: dict[int, int] = {ord(k): v for k, v in {
    "t": 1, "b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "l": 8, "L": 8, "f": 4, "d": 8,
    "D": 5, "T": 8, "V": 0}.items()}
FIXED_SIZES[0] = 0
_T, _TS, _D, _V, _NUL = ord("t"), ord("T"), ord("D"), ord("V"), 0
_S, _X, _F, _A = ord("S"), ord("x"), ord("F"), ord("A")


def key_text(raw: bytes) -> str:
    """A table key as ``str``; non-UTF-8 bytes survive as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _scalar(data: bytes, kind: int, pos: int) -> tuple[Any, int]:
    """One non-container value at ``pos`` -> (value, position after it)."""
    fixed = _SCALARS.get(kind)
    if fixed is not None:
        return fixed[1](data, pos)[0], pos + fixed[0]
    if kind == _T:
        return data[pos] != 0, pos + 1
    if kind == _TS:
        return Timestamp(_u64(data, pos)[0]), pos + 8
    if kind == _D:
        scale, raw = data[pos], _u32(data, pos + 1)[0]
        return decimal.Decimal(raw).scaleb(-scale), pos + 5
    if kind in (_V, _NUL):
        return None, pos
    if kind in (_S, _X):
        stop = pos + 4 + _u32(data, pos)[0]
        if stop > len(data):
            raise Malformed("string overruns its table")
        raw = data[pos + 4:stop]
        if kind == _X:
            return bytearray(raw), stop
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            return bytes(raw), stop
    raise Malformed(f"unknown field type {kind!r}")


def decode_fields(data: bytes, pos: int, end: int, keyed: bool = True) -> dict[str, Any] | list[Any]:
    """The table (``keyed``) or array whose entries lie in ``data[pos:end]``.

    One explicit stack instead of recursion: any depth that fits a frame decodes, in
    time linear in the size."""
    try:
        return _decode(data, pos, end, keyed)
    except (IndexError, struct.error) as exc:
        raise Malformed(f"truncated field value: {exc}") from None


def _decode(data: bytes, pos: int, end: int, keyed: bool) -> dict[str, Any] | list[Any]:
    root: dict[str, Any] | list[Any] = {} if keyed else []
    stack: list[list[Any]] = [[root, pos, end, keyed]]
    while stack:
        frame = stack[-1]
        container, pos, end, keyed = frame
        if pos >= end:
            if pos > end:
                raise Malformed("field value overruns its table")
            stack.pop()
            continue
        key = None
        if keyed:
            stop = pos + 1 + data[pos]
            if stop >= end:
                raise Malformed("table key overruns the table")
            key = key_text(data[pos + 1:stop])
            pos = stop
        kind = data[pos]
        pos += 1
        if kind in (_F, _A):
            stop = pos + 4 + _u32(data, pos)[0]
            if stop > end:
                raise Malformed("value overruns its table")
            value: Any = {} if kind == _F else []
            frame[1] = stop
            stack.append([value, pos + 4, stop, kind == _F])
        else:
            value, frame[1] = _scalar(data, kind, pos)
        if keyed:
            container[key] = value
        else:
            container.append(value)
    return root


def decode_table(data: bytes, pos: int = 0) -> tuple[dict[str, Any], int]:
    """A u32-length-prefixed table at ``pos`` -> (table, position after it)."""
    try:
        end = pos + 4 + _u32(data, pos)[0]
    except struct.error:
        raise Malformed("truncated table length") from None
    if end > len(data):
        raise Malformed("table overruns its data")
    table = decode_fields(data, pos + 4, end, True)
    assert isinstance(table, dict)
    return table, end


def _leaf(value: Any) -> bytes:
    """Tag + bytes of one non-container value."""
    if isinstance(value, Timestamp):
        return b"T" + struct.pack("!Q", int(value) & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        return b"S" + _pack_u32(len(raw)) + raw
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return b"S" + _pack_u32(len(raw)) + raw
    if isinstance(value, float):
        return b"d" + struct.pack("!d", value)
    if isinstance(value, tuple):
        value = list(value)
    try:
        return pamqp_encode.encode_table_value(value)
    except (TypeError, ValueError, struct.error, OverflowError) as exc:
        raise Malformed(f"cannot encode {type(value).__name__} in a field table: {exc}") from None


def _items(container: Mapping[str, Any] | list[Any]) -> Any:
    if isinstance(container, Mapping):
        return iter(container.items())
    return ((None, value) for value in container)


def encode_fields(container: Mapping[str, Any] | list[Any]) -> bytes:
    """The entries of a table or array (without its length prefix), iteratively."""
    stack: list[tuple[Any, list[bytes], bytes]] = [(_items(container), [], b"")]
    while True:
        items, parts, tag = stack[-1]
        for key, value in items:
            if key is not None:
                raw_key = key_bytes(str(key)) if not isinstance(key, bytes) else key
                if len(raw_key) > 255:
                    raise Malformed("table key longer than 255 bytes")
                parts.append(bytes((len(raw_key),)) + raw_key)
            if isinstance(value, Mapping | list):
                stack.append((_items(value), [], b"F" if isinstance(value, Mapping) else b"A"))
                break
            parts.append(_leaf(value))
        else:
            body = b"".join(parts)
            stack.pop()
            if not stack:
                return body
            stack[-1][1].append(tag + _pack_u32(len(body)) + body)


def depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def encode_table(table: Mapping[str, Any]) -> bytes:
    """A field table with its u32 length prefix."""
    body = encode_fields(table)
    return _pack_u32(len(body)) + body
