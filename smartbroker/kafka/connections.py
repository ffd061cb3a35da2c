"""A Kafka connection as the broker and the management API see every client connection
(``broker.outbox.ClientConnection``): in ``broker.connections``, so ``/api/connections``
lists it with RabbitMQ's fields where they apply, DELETE closes it, connection limits count
it and deleting the Kafka vhost or shutting down closes it.

A record beside the protocol object rather than the protocol itself: the AMQP-only parts
of the interface (channels, heartbeat, confirms) stay empty here instead of leaking into
the Kafka front end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("smartbroker.kafka")


class KafkaConnectionRecord:
    """What the broker knows of one Kafka client (registered once it acts as a user)."""

    protocol = "Kafka"
    channel_max = 0
    frame_max = 0
    heartbeat = 0
    blocked = False  # a Produce waits out resource alarms itself (produce.py)
    has_published = False
    writable = True

    def __init__(self, peer: str, local: str, tls: bool, close: Callable[[], None]) -> None:
        self.name = f"{peer} -> {local}"
        self.peer = peer
        self.ssl = tls
        self.user: Any = None  # auth.User
        self.vhost: Any = None  # the Kafka vhost (a VirtualHost)
        self.auth_mechanism = "none"  # the default user, without SASL
        self.client_properties: dict[str, Any] = {}
        self.channels: dict[int, Any] = {}
        self.connected_at = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self._close = close

    @property
    def transport(self) -> None:
        """Shutdown aborts AMQP transports it finds here; the Kafka listener closes its own."""
        return None

    def acting_as(self, broker: Any, user: str, vhost: str, mechanism: str) -> None:
        """The connection now acts as ``user`` in the Kafka vhost: listed from here on."""
        self.user = broker.users.users.get(user)
        self.vhost = broker.vhosts.get(vhost)
        self.auth_mechanism = mechanism

    def client_id(self, client_id: str | None) -> None:
        """Kafka's client.id (each request carries it), shown as client_properties."""
        if client_id and self.client_properties.get("client_id") != client_id:
            self.client_properties = {"client_id": client_id, "product": "Kafka client",
                                      "connection_name": client_id}

    # -- ClientConnection ------------------------------------------------------------------

    def block(self, reason: str) -> None:
        """Resource alarms: nothing to do, a Produce itself waits until they clear."""

    def unblock(self) -> None:
        """See ``block``."""

    def server_close(self, code: int = 320, text: str = "") -> None:
        """Closed by the broker (management DELETE, vhost deleted, shutdown): Kafka has no
        close frame, the socket is closed."""
        log.info("closing Kafka connection %s: %s", self.name, text or "closed by the broker")
        self._close()

    def write(self, data: bytes) -> None:  # Outbox: never called for a Kafka connection
        raise NotImplementedError

    def write_many(self, parts: list[bytes]) -> None:
        raise NotImplementedError

    def send_method(self, channel: int, method: Any) -> None:
        raise NotImplementedError

    def confirms_pending(self, channel: Any) -> None:
        raise NotImplementedError

    def client_capability(self, name: str) -> bool:
        return False

    def fail_channel(self, channel: Any, err: Any) -> None:
        raise NotImplementedError
