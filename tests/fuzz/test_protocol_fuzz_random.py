"""Adapter-level property fuzzing: random bytes, random frame sessions and broken handshakes
fed to ``AMQPConnection`` through the in-process harness (see ``fuzz_harness.py``).
"""

from __future__ import annotations

import struct

import pytest
from fuzz_harness import PROTOCOL_HEADER, fuzz_settings, handshake_bytes, replay
from fuzz_strategies import method_frame, methods, session, splits
from hypothesis import given, note
from hypothesis import strategies as st
from pamqp import commands

# pamqp warns when the fuzzer builds deprecated methods (e.g. access.request)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# --------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------
@fuzz_settings(150)
@given(st.data())
def test_random_bytes(data: st.DataObject) -> None:
    """Arbitrary bytes, with or without a valid protocol header (and handshake) first."""
    prefix = data.draw(st.sampled_from([b"", PROTOCOL_HEADER, handshake_bytes()]))
    stream = prefix + data.draw(st.binary(max_size=300))
    chunks = data.draw(splits(stream))
    note(repr(stream))
    replay(chunks)


@fuzz_settings(600)
@given(st.data())
def test_random_frames(data: st.DataObject) -> None:
    """Handshake + random well-framed pamqp methods, content frames, raw frames; truncated,
    concatenated, byte-flipped, split across data_received calls."""
    stream = data.draw(session())
    chunks = data.draw(splits(stream))
    note(repr(stream))
    client = replay(chunks)
    # the handshake alone always succeeds
    if stream.startswith(handshake_bytes()[:8]) and len(client.frames) >= 1:
        assert isinstance(client.frames[0][1], commands.Connection.Start)


@fuzz_settings(60)
@given(st.integers(0, 12), st.data())
def test_handshake_prefixes(cut_frames: int, data: st.DataObject) -> None:
    """Every handshake step replaced or followed by a random method on channel 0."""
    steps = [PROTOCOL_HEADER, *[handshake_bytes()[i:j] for i, j in _handshake_bounds()]]
    keep = steps[:min(cut_frames, len(steps))]
    extra = method_frame(data.draw(methods()), data.draw(st.sampled_from([0, 0, 1])))
    replay([b"".join(keep) + extra])


def _handshake_bounds() -> list[tuple[int, int]]:
    hs = handshake_bytes()
    pos, out = 8, []
    while pos < len(hs):
        (size,) = struct.unpack_from("!I", hs, pos + 3)
        out.append((pos, pos + size + 8))
        pos += size + 8
    return out
