"""A tiny blocking AMQP 0-9-1 client over a raw socket, built on pamqp.

Used by the raw-protocol tests to send deliberately malformed traffic and to
observe exactly what the broker answers (frames received, then socket close).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from typing import Any

from pamqp import commands, frame, header
from pamqp import exceptions as pamqp_exceptions

FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class Closed(Exception):
    """The peer closed the TCP connection."""


class RawAMQP:
    """Blocking raw client: send bytes/frames, read frames, detect socket close."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.frame_max = 0
        self.channel_max = 0
        self.heartbeat = 0
        self.server_properties: dict[str, Any] = {}

    # -- low level -------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, value: Any, channel: int = 0) -> None:
        self.send(frame.marshal(value, channel))

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from broker")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Closed() from exc
        except TimeoutError:
            raise TimeoutError("no data from broker") from None
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read_raw(self, n: int, timeout: float = 5.0) -> bytes:
        """Read exactly n bytes (used for the protocol-header reply)."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self, timeout: float = 5.0) -> tuple[int, Any]:
        """Return (channel, frame object); raises Closed if the socket closes first."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                (size,) = struct.unpack(">I", self.buf[3:7])
                if len(self.buf) >= size + 8:
                    try:
                        consumed, channel, value = frame.unmarshal(self.buf)
                    except pamqp_exceptions.UnmarshalingException:
                        raise
                    self.buf = self.buf[consumed:]
                    return channel, value
            self._fill(deadline)

    def expect(self, cls: type, timeout: float = 5.0) -> Any:
        channel, value = self.read_frame(timeout)
        if not isinstance(value, cls):
            raise AssertionError(f"expected {cls.__name__}, got {value!r} on channel {channel}")
        return value

    def read_until_closed(self, timeout: float = 5.0) -> list[tuple[int, Any]]:
        """Collect frames until the broker closes the TCP socket (or timeout)."""
        frames: list[tuple[int, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames.append(self.read_frame(max(0.01, deadline - time.monotonic())))
            except Closed:
                return frames
            # After the broker's connection.close, answer with close-ok so it hangs up.
            if isinstance(frames[-1][1], commands.Connection.Close):
                try:
                    self.send_frame(commands.Connection.CloseOk())
                except OSError:
                    return frames

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the peer has closed the socket; frames received meanwhile are dropped."""
        try:
            self.read_until_closed(timeout)
        except TimeoutError:
            return False
        return True

    def peer_closed(self) -> bool:
        """Whether the peer's close (FIN or reset) has already arrived, without waiting:
        for checking a close did not happen once a later event proves the peer moved on."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawAMQP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handshake ---------------------------------------------------------
    def handshake(
        self,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        frame_max: int | None = None,
        heartbeat: int = 0,
        capabilities: dict[str, bool] | None = None,
        channel_max: int | None = None,
    ) -> None:
        """Protocol header, start/start-ok (PLAIN), tune/tune-ok, open/open-ok."""
        self.send(PROTOCOL_HEADER)
        start = self.expect(commands.Connection.Start)
        self.server_properties = start.server_properties
        self.send_frame(
            commands.Connection.StartOk(
                client_properties={"product": "rawamqp", "capabilities": capabilities or {}},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
                locale="en_US",
            )
        )
        tune = self.expect(commands.Connection.Tune)
        self.channel_max = tune.channel_max if channel_max is None else channel_max
        self.frame_max = frame_max if frame_max is not None else tune.frame_max
        self.heartbeat = heartbeat
        self.send_frame(
            commands.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=heartbeat
            )
        )
        self.send_frame(commands.Connection.Open(virtual_host=vhost))
        self.expect(commands.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.send_frame(commands.Channel.Open(), channel)
        ch, _ = self.read_frame()
        assert ch == channel

    def expect_connection_close(self, timeout: float = 5.0) -> commands.Connection.Close:
        """Read frames until connection.close arrives; reply close-ok; return the close."""
        deadline = time.monotonic() + timeout
        while True:
            _, value = self.read_frame(max(0.01, deadline - time.monotonic()))
            if isinstance(value, commands.Connection.Close):
                with contextlib.suppress(OSError):
                    self.send_frame(commands.Connection.CloseOk())
                return value


def raw_frame(frame_type: int, channel: int, payload: bytes, end: bytes = FRAME_END) -> bytes:
    """Build a frame by hand (type, channel, size, payload, frame-end)."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + end


def content_header(body_size: int, **props: Any) -> header.ContentHeader:
    return header.ContentHeader(0, body_size, commands.Basic.Properties(**props))
