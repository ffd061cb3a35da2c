"""Fuzzing the Kafka front end in-process: the sans-IO framing alone, then every advertised
api key and version through the real ``KafkaClientProtocol`` and handlers (a fake
transport, an in-memory broker, a real event loop for the Fetch long-polls and group
timers).

What must hold for any input (issue 14, "bounded request sizes", and the no-traceback
rule of issue 12): only ``KafkaProtocolError`` escapes the framing; the adapter answers or
closes, nothing escapes ``data_received`` or a loop callback, nothing is logged at ERROR
(the adapter's "handler failure" line is how a handler bug shows) or with a traceback;
every response is a well-framed Kafka response carrying a correlation id the client sent;
and a fresh connection on the same broker is still served afterwards.

Budget: ``SMARTBROKER_FUZZ_EXAMPLES`` scales the examples, as for the AMQP fuzzers.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_harness import fuzz_settings
from hypothesis import given, note
from hypothesis import strategies as st
from kafka_schema_strategies import WideRequest, frame, header, schema_request

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka import codec
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node
from smartbroker.kafka.listener import KafkaClientProtocol
from smartbroker.kafka.protocol import (
    MAX_REQUEST_SIZE,
    NEED_DATA,
    KafkaConnection,
    KafkaProtocolError,
)

PAIRS = sorted((key, v) for key, (lo, hi) in SUPPORTED.items() for v in range(lo, hi + 1))


class FakeTransport:
    """Collects writes; reading can be paused as the listener's back-pressure does."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 9092)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Bad(logging.Handler):
    """Every ERROR record, and any record with a traceback, from the broker's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


class Harness:
    """One in-memory broker and loop shared by a test's examples (state piles up across
    them, as on a real broker)."""

    def __init__(self, config: Config | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.broker = Broker(config or Config())
        self.handlers = KafkaHandlers(self.broker, Node(None, 9092, "fuzz-cluster", "/"))
        self.connections: set[KafkaClientProtocol] = set()
        self.bad = Bad()
        logging.getLogger("smartbroker").addHandler(self.bad)

    def close(self) -> None:
        logging.getLogger("smartbroker").removeHandler(self.bad)
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()
        for q in list(self.broker.vhosts["/"].queues.values()):
            if q.capabilities.offset_log:
                q.close()

    def session(self, chunks: list[bytes], settle: int = 3) -> tuple[FakeTransport, Any]:
        """Feed ``chunks`` to a fresh connection, let the loop run a few passes, close it
        (the bad log records and loop errors so far are dropped: each example has its own)."""
        self.bad.records.clear()
        self.loop_errors.clear()

        async def run() -> tuple[FakeTransport, KafkaClientProtocol]:
            proto = KafkaClientProtocol(self.handlers, self.connections)
            transport = FakeTransport()
            proto.connection_made(transport)  # type: ignore[arg-type]
            for chunk in chunks:
                if transport.closed:
                    break
                proto.data_received(chunk)
            for _ in range(settle):
                await asyncio.sleep(0)
            proto.connection_lost(None)
            await asyncio.sleep(0)
            return transport, proto

        return self.loop.run_until_complete(run())

    def check(self, transport: FakeTransport, sent: set[int]) -> None:
        assert not self.bad.records, [r.getMessage() for r in self.bad.records]
        assert not self.loop_errors, self.loop_errors
        for corr in responses(bytes(transport.data)):
            assert corr in sent, f"response to correlation id {corr} nobody sent"

    def still_serves(self) -> None:
        """A new client gets ApiVersions and Metadata answered on this broker."""
        transport, _ = self.session([frame(header(18, 3, 1) + b"\x01\x01\x00"),
                                     frame(header(3, 1, 2) + struct.pack(">i", -1))])
        assert list(responses(bytes(transport.data))) == [1, 2] and not transport.closed


def responses(data: bytes) -> Iterator[int]:
    """The correlation ids of the framed responses in ``data`` (asserting the framing)."""
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 8, "truncated response"
        size, corr = struct.unpack_from(">ii", data, pos)
        assert 4 <= size <= len(data) - pos - 4, f"bad response size {size}"
        yield corr
        pos += 4 + size


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.still_serves()
    h.close()


# -- the framing alone ----------------------------------------------------------------------


def _drain(conn: KafkaConnection) -> int:
    """Read every request out; only KafkaProtocolError may escape. Returns how many."""
    n = 0
    while True:
        request = conn.next_request()
        if request is NEED_DATA:
            return n
        n += 1
        conn.data_to_send()


@fuzz_settings(300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_raise_protocol_errors(chunks: list[bytes]) -> None:
    conn = KafkaConnection(SUPPORTED)
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            _drain(conn)
    except KafkaProtocolError:
        return


@fuzz_settings(200)
@given(st.sampled_from(PAIRS), st.binary(max_size=48), st.lists(st.integers(1, 40), max_size=4))
def test_garbage_bodies_behind_valid_headers_split_anywhere(
        pair: tuple[int, int], body: bytes, cuts: list[int]) -> None:
    key, version = pair
    data = frame(header(key, version, 11) + body)
    conn = KafkaConnection(SUPPORTED)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(data[pos:pos + cut])
        pos += cut
    pieces.append(data[pos:])
    try:
        for piece in pieces:
            conn.receive_data(piece)
            _drain(conn)
    except KafkaProtocolError:
        pass


@fuzz_settings(100)
@given(st.one_of(st.integers(-(2**31), -1), st.integers(MAX_REQUEST_SIZE + 1, 2**31 - 1)))
def test_a_size_prefix_out_of_bounds_is_refused_before_buffering(size: int) -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(struct.pack(">i", size) + b"x" * 10)
    with pytest.raises(KafkaProtocolError):
        conn.next_request()


def test_a_partial_frame_needs_data_without_copying() -> None:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(struct.pack(">i", MAX_REQUEST_SIZE) + b"x" * 100)
    assert conn.next_request() is NEED_DATA and conn.in_flight == 0


# -- every api key and version through the adapter and the handlers -------------------------


@fuzz_settings(250)
@given(st.sampled_from(PAIRS), st.binary(max_size=64))
def test_garbage_bodies_answer_or_close(harness: Harness, pair: tuple[int, int],
                                        body: bytes) -> None:
    key, version = pair
    transport, _ = harness.session([frame(header(key, version, 5) + body)])
    harness.check(transport, {5})


@st.composite
def well_formed(draw: Any) -> tuple[list[bytes], set[int]]:
    """One to four schema-built requests of any advertised key/version, pipelined."""
    pairs = draw(st.lists(st.sampled_from(PAIRS), min_size=1, max_size=4))
    frames = [draw(schema_request(key, version, 100 + i)) for i, (key, version) in enumerate(pairs)]
    return frames, {100 + i for i in range(len(pairs))}


@fuzz_settings(600)
@given(well_formed(), st.booleans())
def test_well_formed_hostile_requests_answer_or_close(
        harness: Harness, case: tuple[list[bytes], set[int]], one_read: bool) -> None:
    frames, sent = case
    note(repr(frames))
    transport, proto = harness.session([b"".join(frames)] if one_read else frames)
    harness.check(transport, sent)
    assert not proto.waiting, "a deferred response outlived its connection"
    for queue in harness.broker.vhosts["/"].queues.values():
        assert not getattr(queue, "on_append", None), "a Fetch hook outlived its connection"


@pytest.mark.parametrize("pair", PAIRS, ids=[f"key{k}v{v}" for k, v in PAIRS])
@fuzz_settings(5)
@given(data=st.data())
def test_each_key_and_version_decodes_a_schema_request(harness: Harness, pair: tuple[int, int],
                                                       data: st.DataObject) -> None:
    """A schema-built request of each advertised pair must decode (else the fuzzer above
    never gets past the codec for it), and be answered or refused cleanly."""
    key, version = pair
    req = data.draw(schema_request(key, version, 9))
    codec.decode_request(req[4:])
    transport, _ = harness.session([req])
    harness.check(transport, {9})


@pytest.fixture(scope="module")
def crowded() -> Iterator[Harness]:
    """A broker with 300 topics, for requests naming a thousand things."""
    h = Harness()
    vhost = h.broker.vhosts["/"]
    for i in range(300):
        vhost.declare_queue(f"crowd-{i}", durable=True, arguments={"x-queue-type": "stream"})
    yield h
    h.still_serves()
    h.close()


NEWEST = sorted((key, hi) for key, (_lo, hi) in SUPPORTED.items())


@pytest.mark.parametrize("pair", NEWEST, ids=[f"key{k}v{v}" for k, v in NEWEST])
def test_wide_requests_take_linear_time(crowded: Harness, pair: tuple[int, int]) -> None:
    """Top-level arrays of 1000 items (topics, groups, ids...) against 300 topics: a
    handler scanning everything per item stalls every client (DescribeGroups took 30 s for
    3000 groups, Metadata 3 s for 2000 topic ids). Ten times the items may take about ten
    times as long, not a hundred: 1000 items within a second, or within 30 times what
    100 took (a loaded machine slows both alike; quadratic work is 100 times)."""
    key, version = pair
    names = [f"crowd-{i}" for i in range(300)] + ["fuzz-group"]

    def timed(items: int) -> float:
        req = frame(header(key, version, 9) + WideRequest(key, version, items, names).body)
        start = time.monotonic()
        transport, _ = crowded.session([req], settle=1)
        took = time.monotonic() - start
        crowded.check(transport, {9})
        return took

    small, big = timed(100), timed(1000)
    assert big < max(1.0, 30 * small), \
        f"api key {key} v{version}: 1000 items took {big:.2f}s, 100 took {small:.3f}s"


@pytest.fixture(scope="module")
def sasl_required() -> Iterator[Harness]:
    """A broker where every client must authenticate first (only ApiVersions and SASL)."""
    h = Harness(Config(kafka_sasl_required=True))
    yield h
    h.close()


SASL_PAIRS = [p for p in PAIRS if p[0] in (17, 36, 18)]


@st.composite
def before_login(draw: Any) -> tuple[list[bytes], set[int]]:
    """SaslHandshake/SaslAuthenticate/ApiVersions built from their schemas (hostile
    mechanisms and tokens), now and then followed by any other request."""
    pairs = draw(st.lists(st.sampled_from(SASL_PAIRS), min_size=1, max_size=4))
    if draw(st.booleans()):
        pairs.append(draw(st.sampled_from(PAIRS)))
    frames = [draw(schema_request(key, version, 200 + i)) for i, (key, version) in enumerate(pairs)]
    if draw(st.booleans()):  # a mechanism we serve, so the exchange gets further
        mechanism = draw(st.sampled_from(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])).encode()
        frames.insert(0, frame(header(17, 1, 199) + struct.pack(">h", len(mechanism)) + mechanism))
    return frames, {199} | {200 + i for i in range(len(pairs))}


@fuzz_settings(300)
@given(before_login())
def test_hostile_sasl_exchanges_answer_or_close(sasl_required: Harness,
                                                case: tuple[list[bytes], set[int]]) -> None:
    frames, sent = case
    note(repr(frames))
    transport, _ = sasl_required.session([b"".join(frames)], settle=2)
    sasl_required.check(transport, sent)
