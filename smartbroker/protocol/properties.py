"""Structural validation of content-header properties without decoding them.

The broker forwards property bytes untouched, so a malformed block would reach (and
break) every consumer's parser. This walks the block once — flags, short strings,
tables and arrays of every AMQP field type — at a fraction of the cost of a full decode,
and rejects anything a client could not decode. As RabbitMQ, it accepts short strings,
table keys and long strings that are not UTF-8 (they are bytes on the wire) and tables
nested to any depth that fits the frame: the walk keeps an explicit stack, no recursion.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from smartbroker.protocol.fields import FIXED_SIZES as _FIXED
from smartbroker.protocol.fields import Malformed

_u32 = struct.Struct("!I").unpack_from
# property bits in wire order (bit 15 first); bit 0 is the flag-word continuation
_SHORTSTR, _TABLE = -1, -2
_LAYOUT = ((15, _SHORTSTR), (14, _SHORTSTR), (13, _TABLE), (12, 1), (11, 1), (10, _SHORTSTR),
           (9, _SHORTSTR), (8, _SHORTSTR), (7, _SHORTSTR), (6, 8), (5, _SHORTSTR),
           (4, _SHORTSTR), (3, _SHORTSTR), (2, _SHORTSTR))
# field type byte -> fixed size; S/x (u32-sized), F (table), A (array) handled apart
_S, _X, _F, _A = ord("S"), ord("x"), ord("F"), ord("A")

__all__ = ["Malformed", "validate", "validate_fields"]


@lru_cache(maxsize=256)
def _present(flags: int) -> tuple[int, ...]:
    return tuple(kind for bit, kind in _LAYOUT if flags & (1 << bit))


def validate_fields(data: bytes, pos: int, end: int, keyed: bool) -> None:
    """Walk the entries of a table (``keyed``) or array between pos and end, and every
    nested one, with an explicit stack of (end, keyed) for the enclosing containers."""
    fixed = _FIXED
    stack: list[tuple[int, bool]] = []
    while True:
        if pos >= end:
            if pos != end:
                raise Malformed("field value overruns its table")
            if not stack:
                return
            end, keyed = stack.pop()
            continue
        if keyed:
            pos += 1 + data[pos]
            if pos >= end:
                raise Malformed("table key overruns the table")
        kind = data[pos]
        pos += 1
        size = fixed.get(kind)
        if size is not None:
            pos += size
        elif kind in (_S, _X, _F, _A):
            if pos + 4 > end:
                raise Malformed("truncated length")
            stop = pos + 4 + _u32(data, pos)[0]
            if stop > end:
                raise Malformed("value overruns its table")
            if kind in (_F, _A):
                stack.append((end, keyed))
                pos, end, keyed = pos + 4, stop, kind == _F
            else:
                pos = stop
        else:
            raise Malformed(f"unknown field type {kind!r}")


def validate(header_payload: bytes) -> None:
    """Raise ``Malformed`` unless the content header's properties decode cleanly."""
    data = header_payload
    end = len(data)
    if end < 14:
        raise Malformed("content header too short")
    flags = (data[12] << 8) | data[13]
    if flags & 1:
        raise Malformed("property flags continue past the basic class's properties")
    pos = 14
    for kind in _present(flags):
        if kind == _SHORTSTR:
            if pos >= end:
                raise Malformed("truncated short string")
            pos += 1 + data[pos]
            if pos > end:
                raise Malformed("short string overruns the property block")
        elif kind == _TABLE:
            if pos + 4 > end:
                raise Malformed("truncated headers table")
            stop = pos + 4 + _u32(data, pos)[0]
            if stop > end:
                raise Malformed("headers table overruns the property block")
            validate_fields(data, pos + 4, stop, True)
            pos = stop
        else:
            pos += kind
            if pos > end:
                raise Malformed("truncated property")
