"""Shared hypothesis strategies and frame helpers for the codec-vs-pamqp tests."""

from __future__ import annotations

import datetime
import struct

from hypothesis import settings
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.header import ContentHeader

from smartbroker.protocol import codec

# per-test settings (a loaded profile would leak into other modules)
SETTINGS = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------- strategies

# pamqp validates exchange names against ^[a-zA-Z0-9-_.:@#,/+ ]*$ and at most 127 chars
PAMQP_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@#,/+ "
pamqp_names = st.text(alphabet=PAMQP_NAME_ALPHABET, max_size=127)


def _fit_255(text: str) -> str:
    """Drop trailing characters until the UTF-8 form fits a short string."""
    while len(text.encode()) > 255:
        text = text[:-1]
    return text


utf8_shortstr = st.text(max_size=255).map(_fit_255)
channels = st.integers(0, 0xFFFF)
delivery_tags = st.integers(0, 2**63 - 1)  # pamqp packs long-long as signed
ulongs = st.integers(0, 2**32 - 1)


def ex_rk(exchange: str, routing_key: str) -> bytes:
    return codec.shortstr(exchange) + codec.shortstr(routing_key)


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse a byte stream of frames into (type, channel, payload), checking frame-end."""
    out = []
    pos = 0
    while pos < len(data):
        ftype, channel, size = struct.unpack_from("!BHI", data, pos)
        payload = data[pos + 7 : pos + 7 + size]
        assert len(payload) == size, "truncated frame"
        assert data[pos + 7 + size] == codec.FRAME_END, "missing frame-end octet"
        out.append((ftype, channel, payload))
        pos += 8 + size
    return out


def _payload(data: bytes) -> bytes:
    [(_, _, payload)] = split_frames(data)
    return payload


# content-header properties

_shortstr_prop = st.one_of(st.none(), st.text(min_size=1, max_size=40).map(_fit_255))
_scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.floats(width=32, allow_nan=False),  # pamqp encodes floats as 32-bit 'f'
    st.none(),
)
_field_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
_headers = st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=12), _field_value,
                                                min_size=1, max_size=6))
_timestamps = st.one_of(st.none(), st.integers(0, 2**32 - 1).map(
    lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)))

properties = st.builds(
    commands.Basic.Properties,
    content_type=_shortstr_prop,
    content_encoding=_shortstr_prop,
    headers=_headers,
    delivery_mode=st.one_of(st.none(), st.sampled_from([1, 2])),
    priority=st.one_of(st.none(), st.integers(0, 255)),
    correlation_id=_shortstr_prop,
    reply_to=_shortstr_prop,
    expiration=st.one_of(st.none(), st.integers(0, 10**9).map(str)),
    message_id=_shortstr_prop,
    timestamp=_timestamps,
    message_type=_shortstr_prop,
    user_id=_shortstr_prop,
    app_id=_shortstr_prop,
)


def _header_payload(body_size: int, props: commands.Basic.Properties) -> bytes:
    data = frame.marshal(ContentHeader(0, body_size, props), 1)
    [(ftype, _, payload)] = split_frames(data)
    assert ftype == codec.FRAME_HEADER
    return payload
