"""The asyncio adapter around the sans-IO protocol: a fake transport, an in-process
broker, one event loop per test; what the adapter adds to the protocol (replies, timers,
closing the transport) is checked from the bytes it writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pamqp import body as pamqp_body
from pamqp import commands, frame, header

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.protocol.states import State
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5672)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Peer:
    """One client: send frames, read back what the adapter wrote since the last read."""

    def __init__(self) -> None:
        self.broker = Broker(Config())
        self.transport = FakeTransport()
        self.conn = AMQPConnection(self.broker, Flusher())
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.read_pos = 0

    def send(self, *parts: Any, channel: int = 0) -> list[Any]:
        data = b"".join(p if isinstance(p, bytes) else frame.marshal(p, channel) for p in parts)
        self.conn.data_received(data)
        return self.frames()

    def frames(self) -> list[Any]:
        out = bytes(self.transport.out[self.read_pos:])
        self.read_pos = len(self.transport.out)
        frames = []
        while out:
            consumed, _, value = frame.unmarshal(out)
            frames.append(value)
            out = out[consumed:]
        return frames

    def handshake(self, capabilities: dict[str, bool] | None = None,
                  password: str = "guest") -> list[Any]:
        start = self.send(PROTOCOL_HEADER)
        tune = self.send(commands.Connection.StartOk(
            client_properties={"capabilities": capabilities or {}}, mechanism="PLAIN",
            response=f"\0guest\0{password}"))
        if not tune or not isinstance(tune[0], commands.Connection.Tune):
            return start + tune
        self.send(commands.Connection.TuneOk(channel_max=100, frame_max=8192, heartbeat=0))
        return start + tune + self.send(commands.Connection.Open(virtual_host="/"))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_handshake_replies_and_negotiated_values() -> None:
    async def go() -> None:
        peer = Peer()
        kinds = [type(f).__name__ for f in peer.handshake()]
        assert kinds == ["Start", "Tune", "OpenOk"]
        assert (peer.conn.frame_max, peer.conn.channel_max, peer.conn.state) == (8192, 100, State.OPEN)
        assert peer.conn.user.name == "guest" and peer.conn.vhost.name == "/"
    run(go)


def test_bad_protocol_header_gets_ours_and_a_hang_up() -> None:
    async def go() -> None:
        peer = Peer()
        peer.conn.data_received(b"HTTP/1.1")
        assert bytes(peer.transport.out) == PROTOCOL_HEADER
        assert peer.transport.closed and peer.conn.state is State.CLOSED
    run(go)


def test_refused_login_with_authentication_failure_close_reads_403() -> None:
    async def go() -> None:
        peer = Peer()
        frames = peer.handshake({"authentication_failure_close": True}, password="wrong")
        close = frames[-1]
        assert isinstance(close, commands.Connection.Close) and close.reply_code == 403
        assert peer.conn.state is State.CLOSING
        peer.send(commands.Connection.CloseOk())
        assert peer.conn.state is State.CLOSED and peer.transport.closed
    run(go)


def test_refused_login_without_the_capability_is_silent() -> None:
    async def go() -> None:
        peer = Peer()
        frames = peer.handshake(password="wrong")
        assert [type(f).__name__ for f in frames] == ["Start"]
        assert peer.conn.state is State.CLOSED and not peer.transport.closed  # after a delay
    run(go)


def test_both_sides_closing_at_once_ends_at_once() -> None:
    async def go() -> None:
        peer = Peer()
        peer.handshake()
        peer.conn.server_close()
        assert isinstance(peer.frames()[-1], commands.Connection.Close)
        frames = peer.send(commands.Connection.Close(reply_code=200, reply_text="", class_id=0,
                                                     method_id=0))
        assert isinstance(frames[-1], commands.Connection.CloseOk)
        assert peer.transport.closed
    run(go)


def test_channel_error_closes_the_channel_and_drops_its_frames_until_close_ok() -> None:
    async def go() -> None:
        peer = Peer()
        peer.handshake()
        peer.send(commands.Channel.Open(), channel=1)
        frames = peer.send(commands.Basic.Publish(exchange="missing", routing_key="k"),
                           frame.marshal(header.ContentHeader(0, 2, commands.Basic.Properties()), 1),
                           frame.marshal(pamqp_body.ContentBody(b"hi"), 1), channel=1)
        [close] = frames
        assert (close.reply_code, close.class_id, close.method_id) == (404, 60, 40)
        assert close.reply_text == "NOT_FOUND - no exchange 'missing' in vhost '/'"
        assert peer.send(commands.Queue.Declare(queue="q"), channel=1) == []  # dropped
        assert peer.send(commands.Channel.CloseOk(), channel=1) == []
        assert 1 not in peer.conn.channels
        [ok] = peer.send(commands.Channel.Open(), channel=1)
        assert isinstance(ok, commands.Channel.OpenOk)
    run(go)


def test_publish_and_get_through_the_adapter() -> None:
    async def go() -> None:
        peer = Peer()
        peer.handshake()
        peer.send(commands.Channel.Open(), channel=1)
        peer.send(commands.Queue.Declare(queue="q"), channel=1)
        body = b"x" * 20000  # over frame_max 8192: split both ways
        peer.send(commands.Basic.Publish(routing_key="q"),
                  frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1),
                  *(frame.marshal(pamqp_body.ContentBody(body[i:i + 8000]), 1)
                    for i in range(0, len(body), 8000)), channel=1)
        frames = peer.send(commands.Basic.Get(queue="q", no_ack=True), channel=1)
        assert isinstance(frames[0], commands.Basic.GetOk)
        assert b"".join(f.value for f in frames[2:]) == body
        assert all(len(f.value) <= 8192 - 8 for f in frames[2:])
    run(go)
