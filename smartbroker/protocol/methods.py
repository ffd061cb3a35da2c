"""Method frames the hot paths do not parse by hand, decoded with pamqp's method classes.

pamqp's own ``unmarshal`` decodes field tables with ``decode.field_table``, which recurses
per nesting level (a RecursionError for a table a few hundred deep, which RabbitMQ
accepts) and copies the rest of the frame per entry (quadratic in a table of many tiny
fields). Rather than replacing that function inside pamqp for the whole process, this
walks the method's fields itself: ``table`` goes to the linear, iterative
``fields.decode_table``; every other type to pamqp's decoder, so values come out exactly
as pamqp makes them.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from typing import Any

from pamqp import commands
from pamqp import decode as pamqp_decode
from pamqp.base import Frame as PamqpMethod

from smartbroker.errors import ConnectionError, MalformedFrame
from smartbroker.protocol import fields

_ids = struct.Struct("!HH")
_index = struct.Struct("!I")


def decode_method(payload: bytes) -> PamqpMethod:
    """A method frame payload to a pamqp object, or the connection error RabbitMQ
    answers bytes it cannot parse with."""
    if len(payload) < 4:
        raise ConnectionError(502, "cannot decode method frame", 0, 0)
    index = _index.unpack_from(payload)[0]
    cls = commands.INDEX_MAPPING.get(index)
    cls_id, meth_id = index >> 16, index & 0xFFFF
    if cls is None:
        raise ConnectionError(540, f"unknown method (class {cls_id}, method {meth_id})",
                              cls_id, meth_id)
    method = cls()
    try:
        _unmarshal(method, payload, 4)
    except UnicodeDecodeError:
        raise MalformedFrame(501, "Malformed UTF-8 in shortstr") from None  # as RabbitMQ
    except (ValueError, struct.error, IndexError) as exc:
        if isinstance(exc.__cause__, UnicodeDecodeError):
            raise MalformedFrame(501, "Malformed UTF-8 in shortstr") from None
        raise ConnectionError(502, "cannot decode method frame", cls_id, meth_id) from None
    return method


def _unmarshal(method: PamqpMethod, payload: bytes, pos: int) -> None:
    """pamqp's ``Frame.unmarshal`` (bits packed low bit first, a new octet after eight
    bits or any other field), with tables decoded by ``fields.decode_table``."""
    data = payload[pos:]
    offset, in_bits = 0, False
    by_type = pamqp_decode.by_type
    for name in method.__slots__:
        kind = method.amqp_type(name)
        if in_bits and (kind != "bit" or offset == 8):
            data = data[1:]
            offset, in_bits = 0, False
        if kind == "bit":
            _, value = by_type(data, "bit", offset)
            offset += 1
            in_bits = True
            setattr(method, name, value)
            continue
        if kind == "table":
            consumed, value = decode_table(data)
        else:
            consumed, value = by_type(data, kind)
        setattr(method, name, value)
        data = data[consumed:]


def decode_table(value: bytes) -> tuple[int, dict[str, Any]]:
    """A method's field table (client properties, arguments) -> (octets used, table).
    Timestamps become ``datetime`` as pamqp makes them, where one can hold them, since
    argument checks (``x-stream-offset``) expect that."""
    try:
        table, end = fields.decode_table(value, 0)
    except fields.Malformed as exc:
        raise ValueError(str(exc)) from None
    return end, with_datetimes(table)


def with_datetimes(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` with its ``fields.Timestamp`` values made ``datetime`` where they fit."""
    stack: list[Any] = [table]
    while stack:
        container = stack.pop()
        pairs = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in list(pairs):
            if isinstance(value, dict | list):
                stack.append(value)
            elif isinstance(value, fields.Timestamp):
                seconds = int(value) / 1000.0 if value > 0xFFFFFFFF else int(value)
                with contextlib.suppress(OverflowError, OSError, ValueError):  # else: raw int
                    container[key] = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return table


def ids(payload: bytes) -> tuple[int, int]:
    """(class id, method id) of a method payload, (0, 0) when it is too short."""
    if len(payload) >= 4:
        return _ids.unpack_from(payload)
    return 0, 0


__all__ = ["decode_method", "decode_table", "ids", "with_datetimes"]
