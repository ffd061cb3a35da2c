"""Hypothesis strategies for the protocol fuzzers: AMQP methods, properties, content and raw
frames, whole client sessions and the ways a byte stream is cut into ``data_received`` calls.

Shared by the adapter-level fuzz tests (``test_protocol_fuzz_*.py``) and the sans-IO fuzzer
(``test_protocol_sansio_fuzz.py``).
"""

from __future__ import annotations

import struct
from typing import Any

from fuzz_harness import FRAME_END, handshake_bytes
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, encode, frame, header, heartbeat

from smartbroker.protocol import codec

# --------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------
NAMES = ["q0", "q1", "x0", "x1", "", "amq.direct", "amq.fanout", "amq.topic", "amq.headers",
         "amq.gen-x", "amq.q", "dlx", "a.b.*", "#"]
ARG_KEYS = ["x-max-length", "x-max-length-bytes", "x-message-ttl", "x-expires", "x-overflow",
            "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-queue-type",
            "x-max-priority", "x-single-active-consumer", "x-delivery-limit", "x-queue-mode",
            "x-priority", "x-match", "alternate-exchange", "x-consumer-timeout", "CC", "BCC",
            "x-queue-master-locator", "x-stream-offset", "x-cancel-on-ha-failover"]


def shortstr() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NAMES),
                     st.text(max_size=40),
                     st.text(min_size=200, max_size=255, alphabet="ab.*#")).filter(
        lambda s: len(s.encode()) <= 255)


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2 ** 63), 2 ** 63 - 1),
    st.integers(-5, 70000),
    st.floats(allow_nan=True, width=32),
    st.text(max_size=20), st.binary(max_size=20).map(bytearray),
    st.sampled_from(["classic", "quorum", "stream", "lazy", "drop-head", "reject-publish",
                     "reject-publish-dlx", "all", "any", "any-with-x", "q0", "dlx", "x0"]),
)
field_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
tables = st.one_of(
    st.just({}),
    st.dictionaries(st.one_of(st.sampled_from(ARG_KEYS), st.text(max_size=10)), field_values,
                    max_size=4),
)

_by_type: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 255),
    "short": st.one_of(st.integers(0, 65535), st.integers(0, 8)),
    "long": st.one_of(st.integers(0, 2 ** 32 - 1), st.integers(0, 5)),
    "longlong": st.one_of(st.integers(0, 2 ** 64 - 1), st.integers(0, 6)),
    "bit": st.booleans(),
    "shortstr": shortstr(),
    "longstr": st.one_of(st.text(max_size=30), st.just("\0guest\0guest")),
    "table": tables,
}
METHOD_CLASSES = sorted(commands.INDEX_MAPPING.values(), key=lambda c: c.index)


def method_frame(method: Any, channel: int) -> bytes:
    """pamqp.frame.marshal when the method validates, else the same bytes unvalidated."""
    try:
        return frame.marshal(method, channel)
    except (ValueError, TypeError, struct.error):
        payload = struct.pack("!I", method.index) + codec.marshal_fields(method)
        return raw_frame(1, channel, payload)


def raw_frame(ftype: int, channel: int, payload: bytes, end: bytes = FRAME_END) -> bytes:
    return struct.pack("!BHI", ftype, channel, len(payload)) + payload + end


@st.composite
def methods(draw: st.DrawFn, classes: list[type] | None = None) -> Any:
    cls = draw(st.sampled_from(classes or METHOD_CLASSES))
    method = cls.__new__(cls)
    for name in cls.__slots__:
        kind = cls.amqp_type(name)
        value = draw(_by_type[kind])
        if kind != "longlong":
            try:
                encode.by_type(value, kind)
            except (TypeError, ValueError, OverflowError, struct.error):
                value = {"table": {}, "shortstr": "", "longstr": ""}.get(kind, 0)
        setattr(method, name, value)
    return method


@st.composite
def properties(draw: st.DrawFn) -> commands.Basic.Properties:
    """Basic properties, including values pamqp's constructor would refuse."""
    props = commands.Basic.Properties()
    for name, strategy in (
            ("content_type", st.none() | st.text(max_size=10)),
            ("headers", st.none() | tables),
            ("delivery_mode", st.none() | st.integers(0, 3)),
            ("priority", st.none() | st.integers(0, 255)),
            ("expiration", st.none() | st.sampled_from(["0", "1", "100", "-1", "abc", "",
                                                        "99999999999"])),
            ("message_id", st.none() | st.text(max_size=10)),
            ("user_id", st.none() | st.sampled_from(["guest", "mallory"]))):
        setattr(props, name, draw(strategy))
    return props


@st.composite
def content_header_frame(draw: st.DrawFn, channel: int, body_size: int | None = None) -> bytes:
    size = body_size if body_size is not None else draw(st.integers(0, 300))
    props = draw(properties())
    try:
        ch = header.ContentHeader(0, size, props)
        return frame.marshal(ch, channel)
    except (ValueError, TypeError, OverflowError, struct.error):
        return frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties()), channel)


@st.composite
def publish_sequence(draw: st.DrawFn, channel: int) -> bytes:
    """basic.publish + header + body frames: consistent sizes mostly, sometimes not."""
    pub = commands.Basic.Publish.__new__(commands.Basic.Publish)
    pub.ticket = 0
    pub.exchange = draw(st.sampled_from(["", "", "x0", "hx", "dlx", "amq.fanout", "amq.topic",
                                         "amq.headers", "nope"]))
    pub.routing_key = draw(st.sampled_from(["q0", "q1", "q2", "dlq", "", "a.b.c", "#"]))
    pub.mandatory = draw(st.booleans())
    pub.immediate = draw(st.booleans() if draw(st.integers(0, 9)) == 0 else st.just(False))
    body = draw(st.binary(max_size=200))
    declared = len(body) if draw(st.integers(0, 5)) else draw(st.integers(0, 400))
    hdr = (draw(raw_header_frame(channel, declared)) if draw(st.integers(0, 3)) == 0
           else draw(content_header_frame(channel, declared)))
    parts = [method_frame(pub, channel), hdr]
    if body:
        cut = draw(st.integers(0, len(body)))
        parts += [frame.marshal(pamqp_body.ContentBody(piece), channel)
                  for piece in (body[:cut], body[cut:]) if piece]
    return b"".join(parts)


@st.composite
def raw_header_frame(draw: st.DrawFn, channel: int, body_size: int | None = None) -> bytes:
    """A content header whose property block is random: random flags, then random bytes or
    a valid property list cut short or padded."""
    size = body_size if body_size is not None else draw(st.integers(0, 50))
    prefix = struct.pack("!HHQ", draw(st.sampled_from([60, 60, 60, 10, 0])), 0, size)
    if draw(st.booleans()):
        props = struct.pack("!H", draw(st.integers(0, 0xFFFF))) + draw(st.binary(max_size=60))
    else:
        valid = frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties(
            content_type="t", headers={"CC": ["q1"], "a": 1}, delivery_mode=2, priority=3,
            expiration="100", user_id="guest")), channel)[7 + 12:-1]
        cut = draw(st.integers(0, len(valid)))
        props = valid[:cut] + draw(st.binary(max_size=8))
    return raw_frame(2, channel, prefix + props)


channels = st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(0, 4),
                     st.integers(0, 65535))


CHANNEL_CLASSES = [c for c in METHOD_CLASSES
                   if c.__module__ == "pamqp.commands" and c.index >> 16 in (40, 50, 60, 85, 90)
                   and not c.__name__.endswith("Ok")]


@st.composite
def any_frame(draw: st.DrawFn) -> bytes:
    channel = draw(channels)
    kind = draw(st.integers(0, 19))
    if kind <= 7:
        return draw(publish_sequence(channel))
    if kind <= 11:
        return method_frame(draw(methods(CHANNEL_CLASSES)), channel)
    if kind <= 13:
        return method_frame(draw(methods()), channel)
    if kind == 14:
        return draw(content_header_frame(channel))
    if kind == 15:
        return draw(raw_header_frame(channel))
    if kind == 16:
        return frame.marshal(pamqp_body.ContentBody(draw(st.binary(max_size=50))), channel)
    if kind == 17:
        return heartbeat.Heartbeat().marshal()
    if kind == 18:  # a method frame with a random payload after a valid method index
        cls = draw(st.sampled_from(METHOD_CLASSES))
        return raw_frame(1, channel, struct.pack("!I", cls.index) + draw(st.binary(max_size=40)))
    return raw_frame(draw(st.integers(0, 255)), channel, draw(st.binary(max_size=40)),
                     draw(st.sampled_from([FRAME_END, FRAME_END, b"\x00"])))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random points into data_received calls."""
    mode = draw(st.integers(0, 3))
    if mode == 0 or not data:
        return [data]
    if mode == 1:
        size = draw(st.integers(1, 9))
        return [data[i:i + size] for i in range(0, len(data), size)]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


SETUP = b"".join(frame.marshal(m, ch) for m, ch in (
    (commands.Queue.Declare(queue="q0"), 1),
    (commands.Queue.Declare(queue="q1", exclusive=True), 1),
    (commands.Queue.Declare(queue="q2", arguments={
        "x-max-priority": 5, "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx",
        "x-max-length": 3, "x-delivery-limit": 1, "x-queue-type": "quorum"}), 1),
    (commands.Queue.Declare(queue="dlq", arguments={"x-single-active-consumer": True}), 1),
    (commands.Exchange.Declare(exchange="x0", exchange_type="topic"), 1),
    (commands.Exchange.Declare(exchange="hx", exchange_type="headers"), 1),
    (commands.Exchange.Declare(exchange="dlx", exchange_type="fanout"), 1),
    (commands.Queue.Bind(queue="q0", exchange="x0", routing_key="#"), 1),
    (commands.Queue.Bind(queue="q2", exchange="hx", arguments={"x-match": "any", "a": 1}), 1),
    (commands.Queue.Bind(queue="dlq", exchange="dlx"), 1),
    (commands.Basic.Qos(prefetch_count=2), 2),
    (commands.Basic.Consume(queue="q0", consumer_tag="c0"), 2),
    (commands.Basic.Consume(queue="dlq", consumer_tag="c1", no_ack=True), 2),
    (commands.Confirm.Select(), 3),
))


@st.composite
def session(draw: st.DrawFn) -> bytes:
    """Optional handshake, channels 1-3 opened (usually), then random frames; the stream
    may be truncated, or have a fragment of itself concatenated."""
    prefix = b""
    if draw(st.integers(0, 9)):
        prefix = handshake_bytes(heartbeat_s=draw(st.sampled_from([0, 0, 1, 60])))
        if draw(st.integers(0, 3)):
            prefix += b"".join(frame.marshal(commands.Channel.Open(), n) for n in (1, 2, 3))
            if draw(st.integers(0, 4)):
                prefix += SETUP
    body = b"".join(draw(st.lists(any_frame(), max_size=12)))
    mutation = draw(st.integers(0, 7))
    if mutation == 0 and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif mutation == 1 and body:
        a = draw(st.integers(0, len(body) - 1))
        b = draw(st.integers(a, len(body)))
        body = body + body[a:b]
    elif mutation == 2 and body:  # flip one byte
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes((draw(st.integers(0, 255)),)) + body[i + 1:]
    return prefix + body
