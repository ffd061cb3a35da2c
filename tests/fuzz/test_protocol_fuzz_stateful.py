"""Stateful fuzzing: one broker, a well-behaved-but-random client that reconnects when
closed; after every step the broker's state must stay consistent with what clients saw.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from fuzz_harness import (
    Client,
    _settle,
    capture_bugs,
    check_consistency,
    corpus_hint,
    fuzz_settings,
    handshake_bytes,
)
from fuzz_strategies import (
    content_header_frame,
    method_frame,
    methods,
    properties,
    raw_header_frame,
    shortstr,
    tables,
)
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.server.flush import Flusher

# pamqp warns when the fuzzer builds deprecated methods (e.g. access.request)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

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
