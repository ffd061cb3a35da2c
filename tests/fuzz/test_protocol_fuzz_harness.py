"""Sanity checks of the in-process fuzz harness (``fuzz_harness.py``): a normal session and
a bad protocol header produce exactly the expected broker output.
"""

from __future__ import annotations

import pytest
from fuzz_harness import PROTOCOL_HEADER, handshake_bytes, replay
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

# pamqp warns when the fuzzer builds deprecated methods (e.g. access.request)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

def test_known_good_session_parses() -> None:
    """Sanity check of the harness: a normal session produces only expected frames."""
    chunks = [handshake_bytes(), frame.marshal(commands.Channel.Open(), 1),
              frame.marshal(commands.Queue.Declare(queue="q0"), 1),
              frame.marshal(commands.Basic.Publish(routing_key="q0"), 1),
              frame.marshal(header.ContentHeader(0, 2, commands.Basic.Properties()), 1),
              frame.marshal(pamqp_body.ContentBody(b"hi"), 1),
              frame.marshal(commands.Basic.Get(queue="q0"), 1)]
    client = replay(chunks)
    kinds = [type(v).__name__ for _, v in client.frames]
    assert kinds == ["Start", "Tune", "OpenOk", "OpenOk", "DeclareOk", "GetOk", "ContentHeader",
                     "ContentBody"], kinds




def test_fake_transport_close_then_lost() -> None:
    """Harness check: a bad protocol header gets the broker's header and a close."""
    client = replay([b"HTTP/1.1 GET /\r\n"])
    assert client.transport.out == PROTOCOL_HEADER
    assert client.transport.closing
