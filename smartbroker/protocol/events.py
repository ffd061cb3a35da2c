"""What ``Connection.next_event`` returns: one object per thing the server must act on.

Plain ``__slots__`` classes (cheaper to make than dataclasses or named tuples: one
``Publish`` is built per message). ``NEED_DATA`` and ``PAUSED`` are sentinels.
"""

from __future__ import annotations

from typing import Any

from smartbroker.errors import ChannelError


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes (receive_data)
PAUSED = _Sentinel("PAUSED")  # the server's turn: answer the last event first


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class ProtocolHeader(Event):
    """``AMQP 0-9-1`` accepted: send ``connection.start``."""

    __slots__ = ()


class BadProtocolHeader(Event):
    """Any other 8 bytes: answer our protocol header and hang up (the state is CLOSED)."""

    __slots__ = ("received",)

    def __init__(self, received: bytes) -> None:
        self.received = received


class Method(Event):
    """Any method the protocol does not handle itself, decoded by pamqp's classes."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: Any) -> None:
        self.channel = channel
        self.method = method


class Publish(Event):
    """One complete published message: ``route`` is (exchange, routing key, the raw
    exchange + routing-key short strings), interned per connection, as is ``header``
    (the raw content-header payload, properties validated once). ``flags`` are
    ``codec.property_flags`` bits (plus ``FLAG_REPLY_TO_PSEUDO``)."""

    __slots__ = ("channel", "route", "mandatory", "header", "flags", "body")

    def __init__(self, channel: int, route: tuple[str, str, bytes], mandatory: bool,
                 header: bytes, flags: int, body: bytes) -> None:
        self.channel = channel
        self.route = route
        self.mandatory = mandatory
        self.header = header
        self.flags = flags
        self.body = body


class Ack(Event):
    """``basic.ack`` in its 13-byte form, without pamqp."""

    __slots__ = ("channel", "tag", "multiple")

    def __init__(self, channel: int, tag: int, multiple: bool) -> None:
        self.channel = channel
        self.tag = tag
        self.multiple = multiple


class ChannelOpen(Event):
    """``channel.open`` for a free number (channel_max checked): send open-ok."""

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelClosed(Event):
    """``channel.close-ok`` for a channel we closed: the number is free again."""

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelFailed(Event):
    """A channel error the protocol found itself (message over the size limit, unknown
    delivery mode): the message is dropped; the server closes the channel with ``error``."""

    __slots__ = ("channel", "error")

    def __init__(self, channel: int, error: ChannelError) -> None:
        self.channel = channel
        self.error = error


class Heartbeat(Event):
    __slots__ = ()


class ConnectionClosed(Event):
    """End of input (``receive_data(b"")``)."""

    __slots__ = ()


__all__ = [
    "NEED_DATA", "PAUSED", "Ack", "BadProtocolHeader", "ChannelClosed", "ChannelFailed",
    "ChannelOpen", "ConnectionClosed", "Event", "Heartbeat", "Method", "ProtocolHeader",
    "Publish",
]
