"""Content frames: splitting a body by frame_max and reassembling it, against pamqp.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import random

import pytest
from codec_helpers import (
    SETTINGS,
    _header_payload,
    channels,
    properties,
    split_frames,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.header import ContentHeader

from smartbroker.protocol import codec

# --------------------------------------------------------------------------- content frames


@SETTINGS
@given(channel=channels, props=properties, frame_max=st.integers(9, 5000),
       size=st.integers(0, 20000), seed=st.integers(0, 2**32))
def test_content_frames_split_and_reassemble(channel, props, frame_max, size, seed):
    body = random.Random(seed).randbytes(size)
    header = _header_payload(size, props)
    parts = codec.content_frames(channel, header, body, frame_max)
    frames = split_frames(b"".join(parts))
    assert frames[0] == (codec.FRAME_HEADER, channel, header)
    body_frames = frames[1:]
    assert all(t == codec.FRAME_BODY and ch == channel for t, ch, _ in body_frames)
    assert all(len(p) + codec.FRAME_OVERHEAD <= frame_max for _, _, p in body_frames)
    assert all(p for _, _, p in body_frames), "no empty body frames"
    assert b"".join(p for _, _, p in body_frames) == body
    chunk = frame_max - codec.FRAME_OVERHEAD
    assert len(body_frames) == -(-size // chunk)  # ceil: minimal number of frames


@pytest.mark.parametrize(("size", "frame_max", "expected_sizes"), [
    pytest.param(0, 4096, [], id="empty-body-no-body-frame"),
    pytest.param(4088, 4096, [4088], id="exactly-one-full-frame"),
    pytest.param(4089, 4096, [4088, 1], id="one-byte-over"),
    pytest.param(8176, 4096, [4088, 4088], id="two-full-frames"),
    pytest.param(10, 131072, [10], id="small-body"),
])
def test_content_frames_boundaries(size, frame_max, expected_sizes):
    body = bytes(range(256)) * (size // 256 + 1)
    body = body[:size]
    frames = split_frames(b"".join(codec.content_frames(1, b"H" * 14, body, frame_max)))
    assert [len(p) for _, _, p in frames[1:]] == expected_sizes
    assert all(len(p) + 8 <= frame_max for _, _, p in frames)


@SETTINGS
@given(channel=channels, body=st.binary(max_size=300))
def test_content_body_frames_match_pamqp(channel, body):
    from pamqp.body import ContentBody

    header = _header_payload(len(body), commands.Basic.Properties())
    parts = b"".join(codec.content_frames(channel, header, body, 4096))
    ref = frame.marshal(ContentHeader(0, len(body), commands.Basic.Properties()), channel)
    if body:
        ref += frame.marshal(ContentBody(body), channel)
    assert parts == ref
