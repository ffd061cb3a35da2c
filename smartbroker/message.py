"""A message in flight: routing info, the raw content-header payload and the body.

Properties are decoded only when something asks for them (headers exchange, TTL,
dead-lettering, persistence); an unchanged message is forwarded byte-for-byte.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands

from smartbroker.protocol import codec
from smartbroker.protocol import property_codec as pc

Route = tuple[str, str, bytes]  # exchange, routing key, both as raw short strings


class Message:
    """Few slots on purpose: a queued message costs memory per instance. The route tuple
    and the flags int are shared between messages with the same route and header."""

    __slots__ = ("route", "header_payload", "body", "_properties", "flags")
    bcc: list[str] | None = None  # BCC keys stripped from the headers (see BccMessage)
    ready = True  # a bare message in a ready list is always ready (see queues.ready)

    def __init__(self, exchange: str, routing_key: str, exchange_rk_ss: bytes,
                 header_payload: bytes, body: bytes) -> None:
        self.route: Route = (exchange, routing_key, exchange_rk_ss)
        self.header_payload = header_payload
        self.body = body
        self.flags = codec.property_flags(header_payload)
        self._properties: commands.Basic.Properties | None = None

    @classmethod
    def routed(cls, route: Route, header_payload: bytes, body: bytes, flags: int) -> Message:
        """The publish hot path: route and flags come interned from the connection."""
        msg = cls.__new__(cls)
        msg.route = route
        msg.header_payload = header_payload
        msg.body = body
        msg.flags = flags
        msg._properties = None
        return msg

    @property
    def exchange(self) -> str:
        return self.route[0]

    @property
    def routing_key(self) -> str:
        return self.route[1]

    @property
    def exchange_rk_ss(self) -> bytes:
        return self.route[2]

    @classmethod
    def build(cls, exchange: str, routing_key: str, body: bytes,
              properties: commands.Basic.Properties | None = None) -> Message:
        """A message made inside the broker (dead-lettering, HTTP publish, tests)."""
        props = properties or commands.Basic.Properties()
        header = codec.encode_header(len(body), props)
        msg = cls(exchange, routing_key, codec.shortstr(exchange) + codec.shortstr(routing_key),
                  header, body)
        msg._properties = props
        return msg

    @property
    def properties(self) -> commands.Basic.Properties:
        if self._properties is None:
            self._properties = codec.decode_properties(self.header_payload)
        return self._properties

    @property
    def headers(self) -> dict[str, Any] | None:
        if not self.flags & codec.FLAG_HEADERS:
            return None
        return self.properties.headers

    @property
    def persistent(self) -> bool:
        return bool(self.flags & codec.FLAG_PERSISTENT)

    @property
    def priority(self) -> int:
        if not self.flags & codec.FLAG_PRIORITY:
            return 0
        return self.properties.priority or 0

    @property
    def expiration(self) -> str | None:
        if not self.flags & codec.FLAG_EXPIRATION:
            return None
        return self.properties.expiration

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def body_size(self) -> int:
        return len(self.body)

    def with_properties(self, properties: commands.Basic.Properties, exchange: str | None = None,
                        routing_key: str | None = None) -> Message:
        """A copy with new properties (and optionally new routing info), re-encoded."""
        ex = self.exchange if exchange is None else exchange
        rk = self.routing_key if routing_key is None else routing_key
        return Message.build(ex, rk, self.body, properties)


def has_sender_routing(header_payload: bytes, loose: bool = False) -> bool:
    """Cheap pre-check for CC/BCC headers: a short-string key followed by the array tag,
    or (``loose``) by any value type."""
    if loose:
        return b"\x02CC" in header_payload or b"\x03BCC" in header_payload
    return b"\x02CCA" in header_payload or b"\x03BCCA" in header_payload


def with_sender_routing(message: Message) -> tuple[Message, list[str]]:
    """RabbitMQ's sender-selected distribution: route to routing key + CC + BCC, and strip
    BCC from what consumers see (by splicing the raw headers table: every other byte of
    the publisher's properties is kept)."""
    headers = message.properties.headers or {}
    keys = [message.routing_key]
    for name in ("CC", "BCC"):
        keys += routing_keys_in(headers.get(name))
    if "BCC" in headers:
        raw = pc.split_properties(message.header_payload)["headers"]
        kept = [entry for key, entry in pc.table_entries(raw) if key != "BCC"]
        header = pc.replace_properties(message.header_payload, {"headers": pc.join_table(kept)})
        stripped = BccMessage(message.exchange, message.routing_key, message.exchange_rk_ss,
                              header, message.body)
        stripped.bcc = routing_keys_in(headers["BCC"])
        message = stripped
    return message, keys


def with_delivery_count(message: Message, count: int) -> Message:
    """A copy with ``x-delivery-count`` (a long, as RabbitMQ writes it) set in the raw
    headers; every other property keeps the publisher's bytes."""
    raw = pc.split_properties(message.header_payload).get("headers")
    entries = [e for key, e in pc.table_entries(raw) if key != "x-delivery-count"] if raw else []
    entries.append(pc.typed_entry("x-delivery-count", b"l", count.to_bytes(8, "big", signed=True)))
    header = pc.replace_properties(message.header_payload, {"headers": pc.join_table(entries)})
    return Message(message.exchange, message.routing_key, message.exchange_rk_ss, header, message.body)


def routing_keys_in(values: Any) -> list[str]:
    """A CC/BCC header as routing keys: only an array counts; bytes that are not UTF-8
    are read with replacement characters rather than failing the publish."""
    if not isinstance(values, list):
        return []
    return [v.decode(errors="replace") if isinstance(v, bytes | bytearray) else str(v) for v in values]


class BccMessage(Message):
    """A message whose BCC header was stripped: the keys are kept to route dead letters."""

    __slots__ = ("bcc",)
