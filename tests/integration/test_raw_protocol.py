"""Raw-socket protocol errors: what RabbitMQ answers to malformed AMQP traffic.

Each test also checks that an ordinary client can still use the broker afterwards.
Replies recorded against RabbitMQ 3.10.8.  Note: after a fatal frame error RabbitMQ
sends connection.close at once but only drops the TCP socket ~3 s later, so these
tests assert on the connection.close frame rather than waiting for the hang-up.
"""

from __future__ import annotations

import pytest
from pamqp import body, commands, frame

from .helpers import Broker as BrokerInfo
from .helpers import connect
from .rawamqp import PROTOCOL_HEADER, RawAMQP, content_header, raw_frame


def assert_broker_usable(broker: BrokerInfo) -> None:
    """A fresh, ordinary client connection still works: declare, publish, get."""
    with connect(broker.url) as c:
        chan = c.channel()
        q = chan.queue_declare("", exclusive=True).method.queue
        chan.basic_publish("", q, b"still alive")
        _, _, got = chan.basic_get(q, auto_ack=True)
        assert got == b"still alive"


@pytest.fixture
def raw(broker: BrokerInfo):
    client = RawAMQP(broker.host, broker.port)
    yield client
    client.close()


@pytest.mark.parametrize(
    "header",
    [b"AMQP\x00\x00\x09\x00", b"AMQP\x00\x00\x08\x00", b"HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"],
)
def test_bad_protocol_header_gets_supported_header_and_close(raw: RawAMQP, broker: BrokerInfo, header: bytes) -> None:
    """An unsupported protocol header is answered with AMQP 0-9-1's header, then the socket closes."""
    raw.send(header)
    assert raw.read_raw(8) == PROTOCOL_HEADER
    assert raw.wait_closed()
    assert_broker_usable(broker)


def test_correct_header_gets_connection_start(raw: RawAMQP) -> None:
    """connection.start: version 0-9, PLAIN offered, en_US locale, capabilities table."""
    raw.send(PROTOCOL_HEADER)
    start = raw.expect(commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert "PLAIN" in start.mechanisms.split()
    assert "en_US" in start.locales.split()
    assert isinstance(start.server_properties["capabilities"], dict)


def test_raw_handshake_and_round_trip(raw: RawAMQP) -> None:
    """The full handshake by hand, then declare/publish/get on channel 1."""
    raw.handshake()
    assert raw.frame_max >= 4096
    raw.open_channel(1)
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
    qname = raw.expect(commands.Queue.DeclareOk).queue
    payload = b"raw body"
    raw.send_frame(commands.Basic.Publish(exchange="", routing_key=qname), 1)
    raw.send_frame(content_header(len(payload), content_type="text/plain"), 1)
    raw.send_frame(body.ContentBody(payload), 1)
    raw.send_frame(commands.Basic.Get(queue=qname, no_ack=True), 1)
    get_ok = raw.expect(commands.Basic.GetOk)
    assert get_ok.routing_key == qname
    hdr = raw.expect(type(content_header(0)))
    assert hdr.body_size == len(payload)
    assert hdr.properties.content_type == "text/plain"
    assert raw.expect(body.ContentBody).value == payload
    raw.send_frame(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    raw.expect(commands.Connection.CloseOk)


def _assert_close(close: commands.Connection.Close, code: int, class_id: int, method_id: int) -> None:
    assert (close.reply_code, close.class_id, close.method_id) == (code, class_id, method_id), (
        close.reply_code, close.reply_text, close.class_id, close.method_id)


def test_garbage_after_handshake_is_frame_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """Garbage bytes parse as a frame header with a huge size: 501 FRAME_ERROR (frame_too_large)."""
    raw.handshake()
    raw.send(b"\x00garbage garbage garbage\xff" * 3)
    close = raw.expect_connection_close()
    _assert_close(close, 501, 0, 0)
    assert close.reply_text.startswith("FRAME_ERROR")
    assert_broker_usable(broker)


def test_unknown_frame_type_is_frame_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A well-formed frame of unknown type 9: 501 FRAME_ERROR."""
    raw.handshake()
    raw.send(raw_frame(9, 0, b"abc"))
    _assert_close(raw.expect_connection_close(), 501, 0, 0)
    assert_broker_usable(broker)


def test_frame_larger_than_frame_max_is_frame_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A body frame bigger than the negotiated frame_max (4096): 501 FRAME_ERROR."""
    raw.handshake(frame_max=4096)
    raw.open_channel(1)
    raw.send_frame(commands.Basic.Publish(exchange="", routing_key="nowhere"), 1)
    raw.send_frame(content_header(10000), 1)
    raw.send(raw_frame(3, 1, b"x" * 10000))
    close = raw.expect_connection_close()
    _assert_close(close, 501, 0, 0)
    assert "frame_too_large" in close.reply_text
    assert_broker_usable(broker)


def test_bad_frame_end_octet_is_frame_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A frame whose last octet is not 0xCE: 501 FRAME_ERROR."""
    raw.handshake()
    raw.open_channel(1)
    data = frame.marshal(commands.Queue.Declare(queue="", exclusive=True), 1)
    raw.send(data[:-1] + b"\x00")
    _assert_close(raw.expect_connection_close(), 501, 0, 0)
    assert_broker_usable(broker)


def test_method_on_unopened_channel_is_channel_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """queue.declare on a never-opened channel: connection.close 504 CHANNEL_ERROR naming queue.declare (50, 10)."""
    raw.handshake()
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 5)
    _assert_close(raw.expect_connection_close(), 504, 50, 10)
    assert_broker_usable(broker)


def test_channel_method_on_channel_zero_is_channel_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """queue.declare on channel 0: 504 CHANNEL_ERROR (50, 10)."""
    raw.handshake()
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 0)
    close = raw.expect_connection_close()
    _assert_close(close, 504, 50, 10)
    assert close.reply_text == "CHANNEL_ERROR - unexpected method in connection state running"
    assert_broker_usable(broker)


def test_channel_numbers_above_channel_max_may_be_used(raw: RawAMQP, broker: BrokerInfo) -> None:
    """channel_max limits how many channels are open, not their numbers: with channel_max 2,
    channels 5 and 65535 open; a third is 530 NOT_ALLOWED naming the count (class 0)."""
    raw.handshake(channel_max=2)
    raw.open_channel(5)
    raw.open_channel(65535)
    raw.send_frame(commands.Channel.Open(), 7)
    close = raw.expect_connection_close()
    _assert_close(close, 530, 0, 0)
    assert close.reply_text == ("NOT_ALLOWED - number of channels opened (2) has reached the "
                                "negotiated channel_max (2)")
    assert_broker_usable(broker)


def test_channel_open_ok_carries_an_empty_channel_id(raw: RawAMQP) -> None:
    """channel.open-ok's reserved longstr is empty, byte for byte as from RabbitMQ."""
    raw.handshake()
    raw.send_frame(commands.Channel.Open(), 1)
    # method frame on channel 1, size 8: class 20, method 11, longstr of length 0; frame end
    expected = b"\x01\x00\x01\x00\x00\x00\x08" + b"\x00\x14\x00\x0b" + b"\x00\x00\x00\x00" + b"\xce"
    assert raw.read_raw(len(expected)) == expected


def test_second_channel_open_is_channel_error(raw: RawAMQP, broker: BrokerInfo) -> None:
    """channel.open on an already open channel: 504 CHANNEL_ERROR (20, 10)."""
    raw.handshake()
    raw.open_channel(1)
    raw.send_frame(commands.Channel.Open(), 1)
    _assert_close(raw.expect_connection_close(), 504, 20, 10)
    assert_broker_usable(broker)


def test_body_without_header_is_unexpected_frame(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A content body frame with no publish/header before it: 505 UNEXPECTED_FRAME (0, 0)."""
    raw.handshake()
    raw.open_channel(1)
    raw.send(frame.marshal(body.ContentBody(b"hello"), 1))
    _assert_close(raw.expect_connection_close(), 505, 0, 0)
    assert_broker_usable(broker)


def test_header_where_method_expected_is_unexpected_frame(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A content header frame with no basic.publish before it: 505 UNEXPECTED_FRAME (0, 0)."""
    raw.handshake()
    raw.open_channel(1)
    raw.send_frame(content_header(5), 1)
    _assert_close(raw.expect_connection_close(), 505, 0, 0)
    assert_broker_usable(broker)


def test_method_where_header_expected_is_unexpected_frame(raw: RawAMQP, broker: BrokerInfo) -> None:
    """basic.publish followed by another method instead of a content header:
    505 UNEXPECTED_FRAME naming basic.publish (60, 40)."""
    raw.handshake()
    raw.open_channel(1)
    raw.send_frame(commands.Basic.Publish(exchange="", routing_key="x"), 1)
    raw.send_frame(commands.Basic.Publish(exchange="", routing_key="x"), 1)
    _assert_close(raw.expect_connection_close(), 505, 60, 40)
    assert_broker_usable(broker)


def test_body_on_channel_zero_is_unexpected_frame(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A content body frame on channel 0: 505 UNEXPECTED_FRAME."""
    raw.handshake()
    raw.send(frame.marshal(body.ContentBody(b"hello"), 0))
    _assert_close(raw.expect_connection_close(), 505, 0, 0)
    assert_broker_usable(broker)


def test_heartbeat_on_nonzero_channel_is_unexpected_frame(raw: RawAMQP, broker: BrokerInfo) -> None:
    """A heartbeat frame on channel 1: 505 UNEXPECTED_FRAME."""
    raw.handshake()
    raw.open_channel(1)
    raw.send(raw_frame(8, 1, b""))
    _assert_close(raw.expect_connection_close(), 505, 0, 0)
    assert_broker_usable(broker)


def test_heartbeat_on_channel_zero_is_accepted(raw: RawAMQP) -> None:
    """Client heartbeats on channel 0 are legal at any time; the connection stays up."""
    raw.handshake(heartbeat=0)
    raw.send(raw_frame(8, 0, b""))
    raw.open_channel(1)
    raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
    raw.expect(commands.Queue.DeclareOk)


def test_bad_password_with_auth_failure_close_capability(raw: RawAMQP, broker: BrokerInfo) -> None:
    """Wrong password from a client advertising authentication_failure_close:
    connection.close 403 ACCESS_REFUSED (class/method 0, 0)."""
    raw.send(PROTOCOL_HEADER)
    raw.expect(commands.Connection.Start)
    raw.send_frame(
        commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN",
            response="\0guest\0wrong-password",
        )
    )
    _assert_close(raw.expect_connection_close(), 403, 0, 0)
    assert_broker_usable(broker)


def test_unknown_vhost_is_not_allowed(raw: RawAMQP, broker: BrokerInfo) -> None:
    """connection.open for a missing vhost: connection.close 530 NOT_ALLOWED naming connection.open (10, 40)."""
    raw.send(PROTOCOL_HEADER)
    raw.expect(commands.Connection.Start)
    raw.send_frame(commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"))
    tune = raw.expect(commands.Connection.Tune)
    raw.send_frame(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
    raw.send_frame(commands.Connection.Open(virtual_host="/no-such-vhost-smartbroker"))
    _assert_close(raw.expect_connection_close(), 530, 10, 40)
    assert_broker_usable(broker)


def test_client_close_handshake(raw: RawAMQP) -> None:
    """connection.close from the client is answered by close-ok.

    (RabbitMQ 3.10 then leaves the TCP socket for the client to close, so we don't wait for it.)
    """
    raw.handshake()
    raw.send_frame(commands.Connection.Close(reply_code=200, reply_text="Normal shutdown", class_id=0, method_id=0))
    raw.expect(commands.Connection.CloseOk)
