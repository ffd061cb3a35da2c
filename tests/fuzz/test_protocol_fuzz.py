"""Fuzzing the asyncio adapter and the broker behind it, in-process.

The protocol alone (frames, states, content assembly) is fuzzed without a broker or an
event loop in ``test_protocol_sansio_fuzz.py``. Here ``AMQPConnection`` is driven through
a fake transport inside an asyncio loop, for what needs the broker: channel and queue
cleanup, the 541 path, closing the transport. No sockets, so thousands of inputs run in
seconds. Any exception that escapes ``data_received`` or
``connection_lost`` (or a loop callback such as the flusher or a timer), and any ERROR log
record with a traceback (the broker's 541 INTERNAL_ERROR path), is a bug. The broker's
output must always parse as AMQP frames, and after it sent ``connection.close`` only
``connection.close-ok`` may follow.

Budget: ``SMARTBROKER_FUZZ_EXAMPLES`` (default: small, for CI) scales every test's
``max_examples``; e.g. ``SMARTBROKER_FUZZ_EXAMPLES=5000 pytest tests/fuzz`` for a long run.
Crashing inputs go to ``tests/fuzz/corpus/`` (raw client bytes, fed to a fresh connection
right after ``connection_made``) and are replayed by ``test_corpus_replay``; a failure
message prints the input as a Python bytes literal so it can be saved there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pamqp import body as pamqp_body
from pamqp import commands, encode, frame, header, heartbeat
from pamqp.exceptions import UnmarshalingException

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.handlers.connection import State
from smartbroker.protocol import codec
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher

# pamqp warns when the fuzzer builds deprecated methods (e.g. access.request)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CORPUS = Path(__file__).parent / "corpus"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"
_env_examples = int(os.environ.get("SMARTBROKER_FUZZ_EXAMPLES", "0") or 0)

def examples(default: int) -> int:
    return _env_examples or default


def fuzz_settings(default: int, **kw: Any) -> settings:
    return settings(max_examples=examples(default), deadline=None, derandomize=not _env_examples,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], **kw)


# --------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------
class FakeTransport:
    """Just enough of ``asyncio.Transport``: collects output, reports close like a socket
    transport does (``connection_lost`` on the next loop pass)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.protocol: AMQPConnection | None = None
        self.out = bytearray()
        self.closing = False
        self.aborted = False
        self.reading = True
        self.writes_after_close = 0

    def write(self, data: bytes) -> None:
        if self.closing:
            self.writes_after_close += 1
            return
        self.out += data

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5672)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0


class Bugs(logging.Handler):
    """Records ERROR log records with a traceback (541s) and loop-callback exceptions."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.found.append(f"{record.name}: {record.getMessage()}\n"
                              f"{logging.Formatter().formatException(record.exc_info)}")

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            import traceback
            text += "\n" + "".join(traceback.format_exception(exc))
        self.found.append(f"loop callback error: {text}")


@contextlib.contextmanager
def capture_bugs() -> Iterator[Bugs]:
    bugs = Bugs()
    logger = logging.getLogger("smartbroker")
    old_level = logger.level
    logger.addHandler(bugs)
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    try:
        yield bugs
    finally:
        logger.removeHandler(bugs)
        logger.setLevel(old_level)


class Client:
    """One fake-socket connection to an in-process broker."""

    def __init__(self, broker: Broker, flusher: Flusher, bugs: Bugs) -> None:
        loop = asyncio.get_running_loop()
        self.broker = broker
        self.bugs = bugs
        self.transport = FakeTransport(loop)
        self.conn = AMQPConnection(broker, flusher)
        self.transport.protocol = self.conn
        self.sent = bytearray()
        self.parsed = 0  # bytes of transport.out already parsed
        self.frames: list[tuple[int, Any]] = []
        self.closed_by_broker = False  # the broker sent connection.close
        self.conn.connection_made(self.transport)

    @property
    def lost(self) -> bool:
        return self.conn.state is State.CLOSED and self.transport.closing

    def feed(self, data: bytes) -> None:
        """One ``data_received``, as a socket transport would do it (not after close)."""
        if self.transport.closing or not data:
            return
        self.sent += data
        self.conn.data_received(data)

    def finish(self) -> None:
        """The peer went away (or the transport already closed): ``connection_lost``."""
        if not self.transport.closing:
            self.transport.closing = True
            self.conn.connection_lost(ConnectionResetError())

    def new_frames(self) -> list[tuple[int, Any]]:
        """Parse the output written since the last call; every byte must be a frame."""
        out = bytes(self.transport.out)
        pos = self.parsed
        if pos == 0 and out.startswith(PROTOCOL_HEADER) and self.conn.state is State.CLOSED \
                and len(out) == 8:
            self.parsed = 8  # bad protocol header: the broker answers its own and hangs up
            return []
        fresh = []
        while pos < len(out):
            assert len(out) - pos >= 8, f"truncated output frame: {out[pos:]!r}"
            (size,) = struct.unpack_from("!I", out, pos + 3)
            assert len(out) - pos >= size + 8, f"truncated output frame: {out[pos:pos + 64]!r}"
            try:
                used, channel, value = frame.unmarshal(out[pos:pos + size + 8])
            except UnmarshalingException as exc:
                raise AssertionError(f"broker wrote an unparsable frame {out[pos:pos + 64]!r}: "
                                     f"{exc}") from None
            assert used == size + 8
            pos += used
            fresh.append((channel, value))
        self.parsed = pos
        for channel, value in fresh:
            if self.closed_by_broker:
                assert isinstance(value, commands.Connection.CloseOk), (
                    f"broker sent {value!r} on channel {channel} after connection.close")
            if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                assert value.reply_code != 541, (f"541 INTERNAL_ERROR: {value.reply_text}\n"
                                                 + "\n".join(self.bugs.found))
                assert 300 <= value.reply_code < 600, value
            if isinstance(value, commands.Connection.Close):
                self.closed_by_broker = True
        self.frames += fresh
        return fresh


def handshake_bytes(heartbeat_s: int = 0, vhost: str = "/", frame_max: int = 131072) -> bytes:
    return b"".join((
        PROTOCOL_HEADER,
        frame.marshal(commands.Connection.StartOk(
            client_properties={"product": "fuzz", "capabilities": {"consumer_cancel_notify": True,
                                                                   "basic.nack": True}},
            mechanism="PLAIN", response="\0guest\0guest", locale="en_US"), 0),
        frame.marshal(commands.Connection.TuneOk(channel_max=2047, frame_max=frame_max,
                                                 heartbeat=heartbeat_s), 0),
        frame.marshal(commands.Connection.Open(virtual_host=vhost), 0),
    ))


def check_consistency(broker: Broker, clients: list[Client]) -> None:
    """The vhost state the fuzzed connections leave behind stays coherent."""
    live = {c.conn for c in clients if c.conn.state is not State.CLOSED}
    unacked_by_queue: dict[int, int] = {}
    for client in clients:
        conn = client.conn
        if conn.state is State.CLOSED:
            assert not conn.channels, "closed connection still has channels"
            assert not conn.exclusive_queues, "closed connection still owns exclusive queues"
            continue
        for number, ch in conn.channels.items():
            assert ch.number == number
            tags = list(ch.unacked)
            assert tags == sorted(set(tags)), f"unacked tags not unique/increasing: {tags}"
            assert all(0 < t <= ch.delivery_tag for t in tags), (tags, ch.delivery_tag)
            held = [rec for kind, payload in (ch.tx or []) if kind != "publish"
                    for rec in (payload if kind == "ack" else payload[0])]
            records = [*ch.unacked.values(), *held]
            assert ch.unacked_total == len(records), (ch.unacked_total, len(records))
            for consumer in ch.consumers.values():
                mine = sum(1 for r in records if r.consumer is consumer)
                assert consumer.unacked == mine, (consumer.tag, consumer.unacked, mine)
                assert consumer.queue.deleted or consumer in consumer.queue.consumers
            for rec in records:
                unacked_by_queue[id(rec.queue)] = unacked_by_queue.get(id(rec.queue), 0) + 1
    for vhost in broker.vhosts.values():
        queues = {id(q) for q in vhost.queues.values()}
        exchanges = {id(x) for x in vhost.exchanges.values()}
        for name, ex in vhost.exchanges.items():
            assert ex.name == name
            for binding in ex.bindings.values():
                assert binding.source is ex
                dest = binding.destination
                assert id(dest) in queues or id(dest) in exchanges, (
                    f"binding {ex.name!r} -> {getattr(dest, 'name', dest)!r}: destination gone")
            for binding in ex.inbound:
                assert id(binding.source) in exchanges, f"inbound binding from deleted {binding.source!r}"
        for name, q in vhost.queues.items():
            assert q.name == name and not q.deleted
            assert q.message_count >= 0 and q.unacked_count >= 0 and q.consumer_count >= 0, (
                name, q.message_count, q.unacked_count, q.consumer_count)
            assert q.unacked_count == unacked_by_queue.get(id(q), 0), (
                f"queue {name!r}: unacked_count {q.unacked_count} but "
                f"{unacked_by_queue.get(id(q), 0)} unacked records in channels")
            for binding in q.bindings:
                assert id(binding.source) in exchanges, f"queue {name!r} bound to deleted exchange"
            for consumer in q.consumers:
                conn = consumer.channel.conn
                assert conn in live, f"queue {name!r} has a consumer of a closed connection"
                assert consumer.channel.number in conn.channels
                assert not consumer.channel.torn_down, f"queue {name!r}: consumer on a dead channel"
            owner = q.exclusive_owner
            if owner is not None:
                assert owner in live, f"exclusive queue {name!r} outlived its connection"


def corpus_hint(data: bytes) -> str:
    digest = hashlib.sha1(data).hexdigest()[:12]
    return f"save as tests/fuzz/corpus/crash-{digest}.bin: {data!r}"


async def _settle(rounds: int = 3) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def run_chunks(chunks: list[bytes], *, broker: Broker | None = None) -> Client:
    """Feed ``chunks`` (one data_received each) to a fresh connection; answer broker
    connection.close with close-ok like a client would; then drop the connection."""
    bugs_handler = asyncio.get_running_loop().get_exception_handler()
    broker = broker or Broker(Config())
    with capture_bugs() as bugs:
        asyncio.get_running_loop().set_exception_handler(bugs.loop_handler)
        client = Client(broker, Flusher(), bugs)
        try:
            for chunk in chunks:
                client.feed(chunk)
                await _settle(1)
                client.new_frames()
            await _settle()
            client.new_frames()
            check_consistency(broker, [client])
            if client.closed_by_broker and not client.transport.closing:
                client.feed(frame.marshal(commands.Connection.CloseOk(), 0))
            client.finish()
            await _settle()
            client.new_frames()
            check_consistency(broker, [client])
        finally:
            asyncio.get_running_loop().set_exception_handler(bugs_handler)
        assert not bugs.found, "\n".join(bugs.found)
    assert client.transport.writes_after_close == 0 or client.transport.closing
    return client


def replay(chunks: list[bytes]) -> Client:
    """Run one input; any broker bug fails with a hint for adding it to the corpus."""
    data = b"".join(chunks)
    try:
        return asyncio.run(run_chunks(chunks))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{corpus_hint(data)}") from None
    except Exception as exc:
        raise AssertionError(f"exception escaped the protocol layer: {exc!r}\n"
                             f"{corpus_hint(data)}") from exc


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


# --------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------
@fuzz_settings(150)
@given(st.data())
def test_random_bytes(data: st.DataObject) -> None:
    """Arbitrary bytes, with or without a valid protocol header (and handshake) first."""
    prefix = data.draw(st.sampled_from([b"", PROTOCOL_HEADER, handshake_bytes()]))
    stream = prefix + data.draw(st.binary(max_size=300))
    chunks = data.draw(splits(stream))
    note(repr(stream))
    replay(chunks)


@fuzz_settings(600)
@given(st.data())
def test_random_frames(data: st.DataObject) -> None:
    """Handshake + random well-framed pamqp methods, content frames, raw frames; truncated,
    concatenated, byte-flipped, split across data_received calls."""
    stream = data.draw(session())
    chunks = data.draw(splits(stream))
    note(repr(stream))
    client = replay(chunks)
    # the handshake alone always succeeds
    if stream.startswith(handshake_bytes()[:8]) and len(client.frames) >= 1:
        assert isinstance(client.frames[0][1], commands.Connection.Start)


@fuzz_settings(60)
@given(st.integers(0, 12), st.data())
def test_handshake_prefixes(cut_frames: int, data: st.DataObject) -> None:
    """Every handshake step replaced or followed by a random method on channel 0."""
    steps = [PROTOCOL_HEADER, *[handshake_bytes()[i:j] for i, j in _handshake_bounds()]]
    keep = steps[:min(cut_frames, len(steps))]
    extra = method_frame(data.draw(methods()), data.draw(st.sampled_from([0, 0, 1])))
    replay([b"".join(keep) + extra])


def _handshake_bounds() -> list[tuple[int, int]]:
    hs = handshake_bytes()
    pos, out = 8, []
    while pos < len(hs):
        (size,) = struct.unpack_from("!I", hs, pos + 3)
        out.append((pos, pos + size + 8))
        pos += size + 8
    return out


def test_known_good_session_parses() -> None:
    """Sanity check of the harness: a normal session produces only expected frames."""
    chunks = [handshake_bytes(), frame.marshal(commands.Channel.Open(), 1),
              frame.marshal(commands.Queue.Declare(queue="q0"), 1),
              frame.marshal(commands.Basic.Publish(routing_key="q0"), 1),
              frame.marshal(header.ContentHeader(0, 2, commands.Basic.Properties()), 1),
              frame.marshal(pamqp_body.ContentBody(b"hi"), 1),
              frame.marshal(commands.Basic.Get(queue="q0"), 1)]
    client = replay(chunks)
    kinds = [type(v).__name__ for _, v in client.frames]
    assert kinds == ["Start", "Tune", "OpenOk", "OpenOk", "DeclareOk", "GetOk", "ContentHeader",
                     "ContentBody"], kinds


# --------------------------------------------------------------------------------------
# corpus replay
# --------------------------------------------------------------------------------------
def _corpus_params() -> list[Any]:
    files = sorted(CORPUS.glob("*.bin")) if CORPUS.is_dir() else []
    return [pytest.param(path, id=path.name) for path in files]


@pytest.mark.parametrize("path", _corpus_params())
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_corpus_replay(path: Path, split: str) -> None:
    data = path.read_bytes()
    chunks = [data] if split == "whole" else [data[i:i + 1] for i in range(len(data))]
    replay(chunks)


# --------------------------------------------------------------------------------------
# stateful: one broker, a well-behaved-but-random client (reconnects when closed)
# --------------------------------------------------------------------------------------
Q_NAMES = st.sampled_from(["q0", "q1", "q2", "", "amq.q", "dlq"]) | shortstr()
X_NAMES = st.sampled_from(["x0", "x1", "dlx", "", "amq.direct", "amq.topic", "amq.headers",
                           "amq.fanout", "amq.x"]) | shortstr()
X_TYPES = st.sampled_from(["direct", "fanout", "topic", "headers", "x-consistent-hash", "bogus"])
ROUTING_KEYS = st.sampled_from(["q0", "q1", "q2", "", "#", "*.b", "a.b", "dlq"]) | st.text(max_size=10)
CH = st.integers(1, 3)


class ConnectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self._bugs_cm = capture_bugs()
        self.bugs = self._bugs_cm.__enter__()
        self.loop.set_exception_handler(self.bugs.loop_handler)
        self.broker = Broker(Config())
        self.flusher = Flusher()
        self.clients: list[Client] = []
        self.client: Client | None = None
        self.open_channels: set[int] = set()
        self.tags: dict[int, list[int]] = {}
        self.consumer_tags: dict[int, list[str]] = {}
        self.step(self._connect())

    # -- plumbing --------------------------------------------------------------------------
    def step(self, coro: Any) -> Any:
        try:
            return self.loop.run_until_complete(coro)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self._hint()}") from None
        except Exception as exc:
            raise AssertionError(f"exception escaped the protocol layer: {exc!r}\n"
                                 f"{self._hint()}") from exc

    def _hint(self) -> str:
        return corpus_hint(bytes(self.client.sent)) if self.client else ""

    async def _connect(self) -> None:
        self.client = Client(self.broker, self.flusher, self.bugs)
        self.clients.append(self.client)
        self.open_channels = set()
        self.tags = {}
        self.consumer_tags = {}
        self.client.feed(handshake_bytes())
        await _settle()
        self._react()

    def _react(self) -> None:
        """Behave like a client: close-ok broker closes; learn delivery tags."""
        client = self.client
        for channel, value in client.new_frames():
            if isinstance(value, commands.Channel.Close):
                self.open_channels.discard(channel)
                client.feed(frame.marshal(commands.Channel.CloseOk(), channel))
            elif isinstance(value, commands.Connection.Close):
                client.feed(frame.marshal(commands.Connection.CloseOk(), 0))
            elif isinstance(value, commands.Basic.Deliver | commands.Basic.GetOk):
                self.tags.setdefault(channel, []).append(value.delivery_tag)
            elif isinstance(value, commands.Basic.ConsumeOk):
                self.consumer_tags.setdefault(channel, []).append(value.consumer_tag)

    async def _send(self, data: bytes) -> None:
        client = self.client
        client.feed(data)
        await _settle()
        self._react()
        await _settle()
        self._react()
        if client.transport.closing:
            await _settle()
            client.finish()
            await self._connect()

    def send(self, ch: int, *methods_: Any, ensure_open: bool = True) -> None:
        parts: list[Any] = []
        if ensure_open and ch not in self.open_channels:
            parts.append((commands.Channel.Open(), ch))
            self.open_channels.add(ch)
        parts += [(m, ch) if not isinstance(m, bytes) else m for m in methods_]
        data = b"".join(p if isinstance(p, bytes) else method_frame(p[0], p[1]) for p in parts)
        self.step(self._send(data))

    @staticmethod
    def build(cls: type, **fields: Any) -> Any:
        method = cls.__new__(cls)
        defaults = {"ticket": 0, "nowait": False, "arguments": {}}
        for name in cls.__slots__:
            kind = cls.amqp_type(name)
            default = {"bit": False, "shortstr": "", "longstr": "", "table": {}}.get(kind, 0)
            setattr(method, name, fields.get(name, defaults.get(name, default)))
        return method

    # -- rules -----------------------------------------------------------------------------
    @rule(ch=CH)
    def open_channel(self, ch: int) -> None:
        self.send(ch, ensure_open=True)

    @rule(ch=CH)
    def close_channel(self, ch: int) -> None:
        if ch in self.open_channels:
            self.open_channels.discard(ch)
            self.tags.pop(ch, None)
            self.consumer_tags.pop(ch, None)
            self.send(ch, self.build(commands.Channel.Close, reply_code=200, reply_text="bye"),
                      ensure_open=False)

    @rule(ch=CH, name=Q_NAMES, passive=st.booleans(), durable=st.booleans(),
          exclusive=st.booleans(), auto_delete=st.booleans(), args=tables)
    def declare_queue(self, ch: int, name: str, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, args: dict) -> None:
        self.send(ch, self.build(commands.Queue.Declare, queue=name, passive=passive,
                                 durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                                 arguments=args))

    @rule(ch=CH, name=Q_NAMES, if_unused=st.booleans(), if_empty=st.booleans())
    def delete_queue(self, ch: int, name: str, if_unused: bool, if_empty: bool) -> None:
        self.send(ch, self.build(commands.Queue.Delete, queue=name, if_unused=if_unused,
                                 if_empty=if_empty))

    @rule(ch=CH, name=Q_NAMES)
    def purge_queue(self, ch: int, name: str) -> None:
        self.send(ch, self.build(commands.Queue.Purge, queue=name))

    @rule(ch=CH, name=X_NAMES, kind=X_TYPES, passive=st.booleans(), durable=st.booleans(),
          auto_delete=st.booleans(), internal=st.booleans(), args=tables)
    def declare_exchange(self, ch: int, name: str, kind: str, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, args: dict) -> None:
        self.send(ch, self.build(commands.Exchange.Declare, exchange=name, exchange_type=kind,
                                 passive=passive, durable=durable, auto_delete=auto_delete,
                                 internal=internal, arguments=args))

    @rule(ch=CH, name=X_NAMES, if_unused=st.booleans())
    def delete_exchange(self, ch: int, name: str, if_unused: bool) -> None:
        self.send(ch, self.build(commands.Exchange.Delete, exchange=name, if_unused=if_unused))

    @rule(ch=CH, queue=Q_NAMES, exchange=X_NAMES, key=ROUTING_KEYS, args=tables,
          unbind=st.booleans())
    def bind_queue(self, ch: int, queue: str, exchange: str, key: str, args: dict,
                   unbind: bool) -> None:
        cls = commands.Queue.Unbind if unbind else commands.Queue.Bind
        self.send(ch, self.build(cls, queue=queue, exchange=exchange, routing_key=key,
                                 arguments=args))

    @rule(ch=CH, dest=X_NAMES, source=X_NAMES, key=ROUTING_KEYS, args=tables, unbind=st.booleans())
    def bind_exchange(self, ch: int, dest: str, source: str, key: str, args: dict,
                      unbind: bool) -> None:
        cls = commands.Exchange.Unbind if unbind else commands.Exchange.Bind
        self.send(ch, self.build(cls, destination=dest, source=source, routing_key=key,
                                 arguments=args))

    @rule(ch=CH, exchange=X_NAMES, key=ROUTING_KEYS, mandatory=st.booleans(), props=properties(),
          body=st.binary(max_size=64), data=st.data())
    def publish(self, ch: int, exchange: str, key: str, mandatory: bool, props: Any, body: bytes,
                data: st.DataObject) -> None:
        pub = self.build(commands.Basic.Publish, exchange=exchange, routing_key=key,
                         mandatory=mandatory)
        hdr = data.draw(st.one_of(content_header_frame(ch, len(body)), raw_header_frame(ch))
                        if data.draw(st.integers(0, 7)) == 0
                        else st.just(frame.marshal(header.ContentHeader(0, len(body), props), ch)
                                     if _marshals(props) else
                                     frame.marshal(header.ContentHeader(0, len(body)), ch)))
        parts = [pub, hdr]
        if body:
            parts.append(frame.marshal(pamqp_body.ContentBody(body), ch))
        self.send(ch, *parts)

    @rule(ch=CH, queue=Q_NAMES, tag=st.sampled_from(["", "c1", "c2"]), no_ack=st.booleans(),
          exclusive=st.booleans(), args=tables)
    def consume(self, ch: int, queue: str, tag: str, no_ack: bool, exclusive: bool,
                args: dict) -> None:
        self.send(ch, self.build(commands.Basic.Consume, queue=queue, consumer_tag=tag,
                                 no_ack=no_ack, exclusive=exclusive, arguments=args))

    @rule(ch=CH, data=st.data())
    def cancel(self, ch: int, data: st.DataObject) -> None:
        known = self.consumer_tags.get(ch) or ["c1"]
        tag = data.draw(st.sampled_from(known) | st.sampled_from(["c1", "nope", ""]))
        self.send(ch, self.build(commands.Basic.Cancel, consumer_tag=tag))

    @rule(ch=CH, queue=Q_NAMES, no_ack=st.booleans())
    def get(self, ch: int, queue: str, no_ack: bool) -> None:
        self.send(ch, self.build(commands.Basic.Get, queue=queue, no_ack=no_ack))

    @rule(ch=CH, kind=st.sampled_from(["ack", "nack", "reject"]), multiple=st.booleans(),
          requeue=st.booleans(), data=st.data())
    def settle(self, ch: int, kind: str, multiple: bool, requeue: bool,
               data: st.DataObject) -> None:
        known = self.tags.get(ch, [])
        tag = data.draw(st.sampled_from(known) if known and data.draw(st.integers(0, 4))
                        else st.integers(0, 10))
        if kind == "ack":
            method = self.build(commands.Basic.Ack, delivery_tag=tag, multiple=multiple)
        elif kind == "nack":
            method = self.build(commands.Basic.Nack, delivery_tag=tag, multiple=multiple,
                                requeue=requeue)
        else:
            method = self.build(commands.Basic.Reject, delivery_tag=tag, requeue=requeue)
        self.send(ch, method)

    @rule(ch=CH, count=st.sampled_from([0, 1, 2, 10, 65535]), size=st.sampled_from([0, 0, 0, 1]),
          global_=st.booleans())
    def qos(self, ch: int, count: int, size: int, global_: bool) -> None:
        self.send(ch, self.build(commands.Basic.Qos, prefetch_count=count, prefetch_size=size,
                                 global_=global_))

    @rule(ch=CH, action=st.sampled_from(["select", "commit", "rollback"]))
    def tx(self, ch: int, action: str) -> None:
        cls = {"select": commands.Tx.Select, "commit": commands.Tx.Commit,
               "rollback": commands.Tx.Rollback}[action]
        self.send(ch, self.build(cls))

    @rule(ch=CH, nowait=st.booleans())
    def confirm(self, ch: int, nowait: bool) -> None:
        self.send(ch, self.build(commands.Confirm.Select, nowait=nowait))

    @rule(ch=CH, requeue=st.booleans(), asynchronous=st.booleans())
    def recover(self, ch: int, requeue: bool, asynchronous: bool) -> None:
        cls = commands.Basic.RecoverAsync if asynchronous else commands.Basic.Recover
        self.send(ch, self.build(cls, requeue=requeue))

    @rule(ch=CH, active=st.booleans())
    def flow(self, ch: int, active: bool) -> None:
        self.send(ch, self.build(commands.Channel.Flow, active=active))

    @precondition(lambda self: True)
    @rule(ch=st.integers(0, 4), method=methods())
    def random_method(self, ch: int, method: Any) -> None:
        self.send(ch, method, ensure_open=ch != 0)

    @rule()
    def reconnect(self) -> None:
        """Drop the connection abruptly (exclusive queues and unacked go) and reconnect."""
        async def go() -> None:
            self.client.finish()
            await _settle()
            self.client.new_frames()
            await self._connect()
        self.step(go())

    @rule()
    def advance_time(self) -> None:
        """Let short timers (TTL, x-expires, heartbeats) fire."""
        async def go() -> None:
            await asyncio.sleep(0.002)
            await _settle()
            self._react()
        self.step(go())

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        found = "\n".join(self.bugs.found)
        assert not found, found + "\n" + self._hint()
        try:
            check_consistency(self.broker, self.clients)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self._hint()}") from None

    def teardown(self) -> None:
        try:
            if self.client is not None:
                async def go() -> None:
                    self.client.finish()
                    await _settle()
                self.loop.run_until_complete(go())
                check_consistency(self.broker, self.clients)
                for vhost in self.broker.vhosts.values():
                    for q in vhost.queues.values():
                        assert q.exclusive_owner is None, "exclusive queue survived its owner"
                        assert not q.consumers, "consumer survived its connection"
                found = "\n".join(self.bugs.found)
                assert not found, found
        finally:
            self._bugs_cm.__exit__(None, None, None)
            self.loop.close()


def _marshals(props: Any) -> bool:
    try:
        props.marshal()
    except (ValueError, TypeError, OverflowError, struct.error):
        return False
    return True


ConnectionMachine.TestCase.settings = fuzz_settings(40, stateful_step_count=40)
TestConnectionMachine = ConnectionMachine.TestCase


def test_fake_transport_close_then_lost() -> None:
    """Harness check: a bad protocol header gets the broker's header and a close."""
    client = replay([b"HTTP/1.1 GET /\r\n"])
    assert client.transport.out == PROTOCOL_HEADER
    assert client.transport.closing
