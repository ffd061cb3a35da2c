"""What broker/ needs from a client connection, as two small protocols.

The broker never imports the server: a channel, its consumers and direct reply-to write
through an ``Outbox``; the broker core, limits, the publish session and the management side
see a connection as a ``ClientConnection``. ``server.connection.AMQPConnection`` (or any other
front end, or a test fake) satisfies both structurally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.broker.vhost import VirtualHost
    from smartbroker.errors import AMQPError


class Outbox(Protocol):
    """The write side of one connection, as seen by its channels.

    Writes are buffered and leave the socket once per pass of the event loop; ``writable``
    is False while the transport pushes back (consumers then stop taking deliveries)."""

    frame_max: int  # negotiated: content bodies are split to it
    writable: bool

    def write(self, data: bytes) -> None:
        """Append one encoded frame (or several, already joined) to the output buffer."""

    def write_many(self, parts: list[bytes]) -> None:
        """Append encoded frames (a header and its body frames) to the output buffer."""

    def send_method(self, channel: int, method: Any) -> None:
        """Encode a pamqp method (not on the hot path) and write it."""

    def confirms_pending(self, channel: Channel) -> None:
        """``channel`` has publisher confirms to send: call its ``flush_confirms`` before
        the next write leaves, so acks go out in one batch per loop pass."""

    def client_capability(self, name: str) -> bool:
        """Whether the client announced capability ``name`` (e.g. consumer_cancel_notify)."""

    def fail_channel(self, channel: Channel, err: AMQPError) -> None:
        """Close ``channel`` with ``err`` from outside a frame handler (a failed fsync)."""


class ClientConnection(Outbox, Protocol):
    """One client connection as the broker (core, limits, publish session, management) sees
    it: who it is, where it is, and how to close or throttle it."""

    name: str  # "peer -> local" addresses, RabbitMQ's connection name
    peer: str
    user: Any  # auth.User once logged in
    vhost: VirtualHost  # set at connection.open
    channels: dict[int, Channel]
    blocked: bool
    has_published: bool  # resource alarms block only connections that have published
    # what the management API lists (negotiated values and counters)
    client_properties: dict[str, Any]
    channel_max: int
    heartbeat: int
    connected_at: float
    bytes_in: int
    bytes_out: int

    def block(self, reason: str) -> None:
        """Resource alarm: stop reading (and tell the client if it asked to be told)."""

    def unblock(self) -> None:
        """Alarm cleared: read again."""

    def server_close(self, code: int = ..., text: str = ...) -> None:
        """Broker-initiated ``connection.close`` (shutdown, vhost deleted, management API)."""
