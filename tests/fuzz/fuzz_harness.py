"""Harness for fuzzing the asyncio adapter and the broker behind it, in-process.

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

from hypothesis import HealthCheck, settings
from pamqp import commands, frame
from pamqp.exceptions import UnmarshalingException

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.handlers.connection import State
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher

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
