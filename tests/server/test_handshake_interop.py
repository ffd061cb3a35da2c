"""Frame-size allowance, refused logins and tune-ok limits, byte for byte over a raw socket
(issue 12 E). Every test here passes against RabbitMQ 3.10.8 too (SMARTBROKER_TEST_URL).

* rabbit_reader accepts a frame whose payload is a whole ``frame_max`` (an 8-octet allowance
  for clients that split bodies at frame_max rather than frame_max - 8); one octet more is
  501 FRAME_ERROR naming frame_max - 8.
* A refused login: a client announcing ``authentication_failure_close`` reads
  connection.close 403 and the socket stays open for its close-ok; any other client sees
  the socket closed after a delay, without a frame.
* tune-ok: 0 ("no limit") for channel_max or frame_max, values above the broker's, and
  frame_max below 4096 fail the negotiation: no frame, the socket closed after a delay.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pamqp import commands, frame

from tests.conftest import BrokerInfo
from tests.integration.rawamqp import PROTOCOL_HEADER, Closed, RawAMQP, content_header, raw_frame

CLOSE_WAIT = 10.0  # generous: both brokers hang up 3 s after a failed handshake


@pytest.fixture
def raw(broker: BrokerInfo):
    client = RawAMQP(broker.host, broker.port)
    try:
        yield client
    finally:
        client.close()


def _start_ok(raw: RawAMQP, password: str, capabilities: dict[str, bool]) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(commands.Connection.Start)
    raw.send_frame(commands.Connection.StartOk(
        client_properties={"product": "rawamqp", "capabilities": capabilities},
        mechanism="PLAIN", response=f"\0guest\0{password}", locale="en_US"))


def _frames_until_closed(raw: RawAMQP, timeout: float = CLOSE_WAIT) -> list[Any]:
    """Frames received before the broker closed the socket (fails if it stays open)."""
    frames: list[Any] = []
    try:
        while True:
            frames.append(raw.read_frame(timeout)[1])
    except Closed:
        return frames


def _still_open(raw: RawAMQP, seconds: float = 0.5) -> bool:
    try:
        raw.read_frame(seconds)
    except TimeoutError:
        return True
    except Closed:
        return False
    return True


def _read_body(raw: RawAMQP, size: int) -> bytes:
    body = b""
    while len(body) < size:
        body += raw.read_frame()[1].value
    return body


# -- frame size ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [4088, 4089, 4095, 4096])
def test_body_frame_up_to_a_whole_frame_max_is_accepted(raw: RawAMQP, size: int) -> None:
    raw.handshake(frame_max=4096)
    raw.open_channel(1)
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
    queue = raw.expect(commands.Queue.DeclareOk).queue
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    raw.send(frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
             + frame.marshal(content_header(size), 1)
             + raw_frame(3, 1, body))  # one body frame: 8 + size octets on the wire
    raw.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 1)
    raw.expect(commands.Basic.GetOk)
    assert raw.read_frame()[1].body_size == size
    assert _read_body(raw, size) == body


def test_body_frame_one_octet_over_frame_max_is_frame_error(raw: RawAMQP) -> None:
    raw.handshake(frame_max=4096)
    raw.open_channel(1)
    raw.send(frame.marshal(commands.Basic.Publish(exchange="", routing_key="nowhere"), 1)
             + frame.marshal(content_header(5000), 1)
             + raw_frame(3, 1, b"x" * 4097))
    close = raw.expect(commands.Connection.Close)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}", 0, 0)
    raw.send_frame(commands.Connection.CloseOk())
    assert _frames_until_closed(raw) == []


# -- refused login ---------------------------------------------------------------------------
REFUSED = (b"\x00\x0a\x00\x32\x01\x93" + bytes([len(
    b"ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
    b"For details see the broker logfile.")])
    + b"ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
      b"For details see the broker logfile." + b"\x00\x00\x00\x00")


def test_refused_login_with_auth_failure_close_gets_403_and_waits_for_close_ok(raw: RawAMQP) -> None:
    _start_ok(raw, "wrong-password", {"authentication_failure_close": True})
    header = raw.read_raw(7)
    frame_type, channel, size = struct.unpack(">BHI", header)
    payload_end = raw.read_raw(size + 1)
    assert (frame_type, channel) == (1, 0)
    assert payload_end == REFUSED + b"\xce"  # connection.close 403, class 0 method 0
    assert _still_open(raw)  # the broker waits for our close-ok ...
    raw.send_frame(commands.Connection.CloseOk())
    assert _frames_until_closed(raw) == []  # ... then hangs up


def test_refused_login_with_auth_failure_close_is_dropped_without_close_ok(raw: RawAMQP) -> None:
    _start_ok(raw, "wrong-password", {"authentication_failure_close": True})
    raw.expect(commands.Connection.Close)
    raw.send_frame(commands.Channel.Open(), 1)  # ignored: only close/close-ok matter now
    assert _frames_until_closed(raw) == []


@pytest.mark.parametrize("capabilities", [{}, {"authentication_failure_close": False}],
                         ids=["no-capabilities", "capability-false"])
def test_refused_login_without_auth_failure_close_is_a_silent_hang_up(
        raw: RawAMQP, capabilities: dict[str, bool]) -> None:
    _start_ok(raw, "wrong-password", capabilities)
    assert _frames_until_closed(raw) == []


def test_unknown_mechanism_is_a_silent_hang_up_even_with_the_capability(raw: RawAMQP) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(commands.Connection.Start)
    raw.send_frame(commands.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="NO-SUCH-MECHANISM", response="x", locale="en_US"))
    assert _frames_until_closed(raw) == []


# -- tune-ok ---------------------------------------------------------------------------------
def _tune(raw: RawAMQP) -> commands.Connection.Tune:
    _start_ok(raw, "guest", {"authentication_failure_close": True})
    return raw.expect(commands.Connection.Tune)


@pytest.mark.parametrize(("channel_max", "frame_max"), [
    ("zero", "server"), ("server", "zero"), ("zero", "zero"),
    ("over", "server"), ("server", "over"), ("server", 4095), ("server", 1),
], ids=lambda v: str(v))
def test_tune_ok_outside_the_limits_is_a_silent_hang_up(raw: RawAMQP, channel_max: Any,
                                                        frame_max: Any) -> None:
    tune = _tune(raw)

    def value(spec: Any, server: int) -> int:
        return {"zero": 0, "server": server, "over": server + 1}.get(spec, spec)

    raw.send(frame.marshal(commands.Connection.TuneOk(
        channel_max=value(channel_max, tune.channel_max),
        frame_max=value(frame_max, tune.frame_max), heartbeat=0), 0)
        + frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
    assert _frames_until_closed(raw) == []


@pytest.mark.parametrize(("channel_max", "frame_max"), [(1, 4096), ("server", "server")],
                         ids=["minimum", "server"])
def test_tune_ok_within_the_limits_opens(raw: RawAMQP, channel_max: Any, frame_max: Any) -> None:
    tune = _tune(raw)
    raw.send(frame.marshal(commands.Connection.TuneOk(
        channel_max=tune.channel_max if channel_max == "server" else channel_max,
        frame_max=tune.frame_max if frame_max == "server" else frame_max, heartbeat=0), 0)
        + frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
    raw.expect(commands.Connection.OpenOk)
    raw.open_channel(1)
