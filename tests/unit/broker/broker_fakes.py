"""A client connection with no socket and no event loop, for broker/ unit tests: it is the
``Outbox`` and ``ClientConnection`` of broker/outbox.py, and records what the broker wrote."""

from __future__ import annotations

from typing import Any

from pamqp import commands

from smartbroker.broker.channel import Channel
from smartbroker.broker.core import Broker
from smartbroker.broker.publish import PublishSession
from smartbroker.config import Config
from smartbroker.errors import AMQPError
from smartbroker.message import Message
from smartbroker.protocol import codec


class FakeConnection:
    """Writes land in ``out``; ``flush`` sends pending confirms as the server does."""

    def __init__(self, broker: Broker, user: str = "guest", vhost: str = "/") -> None:
        self.name = "fake"
        self.peer = "fake:1"
        self.client_properties: dict[str, Any] = {}
        self.channel_max = 2047
        self.heartbeat = 0
        self.connected_at = 0.0
        self.bytes_in = self.bytes_out = 0
        self.user = broker.users.users[user]
        self.vhost = broker.vhosts[vhost]
        self.channels: dict[int, Channel] = {}
        self.blocked_for: list[str] = []
        self.blocked = False
        self.has_published = False
        self.frame_max = 131072
        self.writable = True
        self.capabilities: set[str] = set()
        self.out: list[bytes] = []
        self.failed: list[tuple[Channel, AMQPError]] = []
        self._confirming: set[Channel] = set()
        self.closed_with: tuple[int, str] | None = None
        self.session = PublishSession(broker, self)

    # Outbox
    def write(self, data: bytes) -> None:
        self.out.append(data)

    def write_many(self, parts: list[bytes]) -> None:
        self.out.extend(parts)

    def send_method(self, channel: int, method: Any) -> None:
        self.out.append(codec.method_frame(channel, method))

    def confirms_pending(self, channel: Channel) -> None:
        self._confirming.add(channel)

    def client_capability(self, name: str) -> bool:
        return name in self.capabilities

    def fail_channel(self, channel: Channel, err: AMQPError) -> None:
        self.failed.append((channel, err))

    # ClientConnection
    def block(self, reason: str) -> None:
        self.blocked = True
        self.blocked_for.append(reason)

    def unblock(self) -> None:
        self.blocked = False

    def server_close(self, code: int = 320, text: str = "") -> None:
        self.closed_with = (code, text)

    # test helpers
    def open_channel(self, number: int = 1) -> Channel:
        ch = self.channels[number] = Channel(self, number, self.session, self.vhost)
        return ch

    def flush(self) -> list[bytes]:
        """What the server would send at the end of this loop pass."""
        for ch in list(self._confirming):
            ch.flush_confirms()
        self._confirming.clear()
        out, self.out = self.out, []
        return out


def new_broker() -> Broker:
    return Broker(Config())


def publish(ch: Channel, exchange: str, routing_key: str, body: bytes = b"x",
            properties: commands.Basic.Properties | None = None, mandatory: bool = False) -> None:
    """What the front end hands over for one complete message (as server/publisher does)."""
    msg = Message.build(exchange, routing_key, body, properties)
    flags = codec.property_flags(msg.header_payload)
    if properties is not None and properties.reply_to == "amq.rabbitmq.reply-to":
        flags |= codec.FLAG_REPLY_TO_PSEUDO
    ch.publish(msg.route, mandatory, msg.header_payload, flags, body)


__all__ = ["FakeConnection", "new_broker", "publish"]
