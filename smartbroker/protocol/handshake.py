"""Channel 0 for ``Connection.next_event``: the protocol header, connection-class
methods through the state table, and the tune-ok limits. Kept apart from the frame loop
for size; every state change is still a lookup in ``states.CONNECTION``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import commands

from smartbroker.errors import (
    ConnectionError,
    MalformedFrame,
    channel_error,
    command_invalid,
    frame_error,
    not_allowed,
    unexpected_frame,
)
from smartbroker.protocol import codec
from smartbroker.protocol.events import BadProtocolHeader, Event, Heartbeat, Method, ProtocolHeader
from smartbroker.protocol.methods import decode_method, ids
from smartbroker.protocol.states import CLIENT, CONNECTION, HEADER_BAD, HEADER_OK, State

if TYPE_CHECKING:
    from smartbroker.protocol.connection import Connection


def protocol_header(conn: Connection) -> Event | Any:
    """The 8 bytes a client opens with: ``ProtocolHeader`` or ``BadProtocolHeader``."""
    buf, pos = conn._buf, conn._pos
    if len(buf) - pos < 8:
        return conn._need_data()
    head = buf[pos:pos + 8]
    conn._pos = pos + 8
    if head != codec.PROTOCOL_HEADER:
        conn.state = CONNECTION[(conn.state, CLIENT, HEADER_BAD)]
        conn._buf = b""
        conn._pos = 0
        return BadProtocolHeader(head)
    conn.state = CONNECTION[(conn.state, CLIENT, HEADER_OK)]
    return ProtocolHeader()


def channel0_frame(conn: Connection, state: State, ftype: int, payload: bytes) -> Event | None:
    """A frame on channel 0: heartbeats, and connection methods the table allows now."""
    if ftype == codec.FRAME_HEARTBEAT:
        return Heartbeat()
    if ftype not in (codec.FRAME_METHOD, codec.FRAME_HEADER, codec.FRAME_BODY):
        raise frame_error(f"unknown frame type {ftype}")
    if ftype != codec.FRAME_METHOD:
        raise unexpected_frame(f"content frame of type {ftype} on channel 0")
    if len(payload) >= 2 and payload[1] != 10:  # only class connection lives on channel 0
        raise channel_error("unexpected method in connection state running").at(*ids(payload))
    try:
        method = decode_method(payload)
    except MalformedFrame as err:  # RabbitMQ's reader names connection methods
        raise ConnectionError(err.code, err.text, *ids(payload)) from None
    kind = type(method)
    after = CONNECTION.get((state, CLIENT, kind))
    if after is None:
        if state is State.CLOSING:
            return None  # after connection.close only close / close-ok matter
        raise command_invalid(f"unexpected method {method.name} in state "
                              f"{state.name.lower()}").at(*ids(payload))
    if kind is commands.Connection.TuneOk:
        tune_ok(conn, method)
    conn.state = after
    return Method(0, method)


def tune_ok(conn: Connection, m: commands.Connection.TuneOk) -> None:
    """rabbit_reader:validate_negotiated_integer_value: 0 means "no limit" from the
    client, which a server with a limit refuses, as RabbitMQ does."""
    channel_max, frame_max, _ = conn.offer
    _negotiated("frame_max", m.frame_max, 4096, frame_max)
    _negotiated("channel_max", m.channel_max, 1, channel_max)
    conn.frame_max = m.frame_max
    conn.channel_max = m.channel_max
    conn.heartbeat = m.heartbeat


def _negotiated(field: str, value: int, minimum: int, maximum: int) -> None:
    if value and value < minimum:
        raise not_allowed(f"negotiated {field} = {value} is lower than the minimum allowed "
                          f"value ({minimum})").at(10, 31)
    if value == 0 or value > maximum:
        detail = " (no limit)" if value == 0 and field == "channel_max" else ""
        raise not_allowed(f"negotiated {field} = {value}{detail} is higher than the maximum "
                          f"allowed value ({maximum})").at(10, 31)


__all__ = ["channel0_frame", "protocol_header", "tune_ok"]
