"""The listener with a Fetch that waits, through a fake transport: later responses wait
behind it (request order), an append answers it, a closed connection cancels it (no timer
or stream hook left), reading pauses while too many responses are owed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kafka.protocol.consumer import FetchRequest
from pamqp import commands

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka import listener
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.kafka.listener import KafkaClientProtocol
from smartbroker.message import Message
from tests.unit.kafka.listener_fakes import FakeTransport, api_versions, correlation_ids


def fetch(corr: int, max_wait_ms: int = 30000) -> bytes:
    t = FetchRequest.FetchTopic
    r = FetchRequest(version=11, replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1,
                     max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                     forgotten_topics_data=[], rack_id="",
                     topics=[t(topic="s", partitions=[t.FetchPartition(
                         partition=0, current_leader_epoch=-1, fetch_offset=0,
                         log_start_offset=-1, partition_max_bytes=1 << 20)])])
    r.with_header(correlation_id=corr, client_id="c")
    return bytes(r.encode(header=True, framed=True))


def setup() -> tuple[KafkaClientProtocol, FakeTransport, Any]:
    broker = Broker(Config())
    broker.vhosts["/"].declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    p = KafkaClientProtocol(KafkaHandlers(broker, Node(None, 9092, "cid", "/")), set())
    t = FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    return p, t, broker.vhosts["/"].queues["s"]


def test_later_responses_wait_behind_a_waiting_fetch_then_an_append_sends_both() -> None:
    async def run() -> None:
        p, t, queue = setup()
        p.data_received(api_versions(1) + fetch(2) + api_versions(3))
        assert correlation_ids(t.writes) == [1]  # 3 is ready but owed after 2
        queue.publish(Message.build("", "s", b"x", commands.Basic.Properties()))
        future = next(iter(p.waiting))
        await asyncio.wait_for(asyncio.shield(future), 5)
        await asyncio.sleep(0)  # the done callback runs on the next pass
        assert correlation_ids(t.writes) == [1, 2, 3]
        assert queue.on_append == [] and not p.waiting
    asyncio.run(run())


def test_connection_lost_cancels_the_wait() -> None:
    async def run() -> None:
        p, t, queue = setup()
        p.data_received(fetch(1))
        assert queue.on_append and p.waiting
        future = next(iter(p.waiting))
        p.connection_lost(None)
        await asyncio.sleep(0)
        assert future.cancelled() and queue.on_append == []
        queue.publish(Message.build("", "s", b"x", commands.Basic.Properties()))
        await asyncio.sleep(0)
        assert t.writes == []
    asyncio.run(run())


def test_reading_pauses_while_many_responses_are_owed(monkeypatch: Any) -> None:
    monkeypatch.setattr(listener, "MAX_IN_FLIGHT", 3)

    async def run() -> None:
        p, t, queue = setup()
        p.data_received(fetch(1) + api_versions(2))
        assert not t.paused
        p.data_received(api_versions(3))
        assert t.paused  # 3 owed, the first still waiting
        queue.publish(Message.build("", "s", b"x", commands.Basic.Properties()))
        await asyncio.wait_for(asyncio.shield(next(iter(p.waiting))), 5)
        await asyncio.sleep(0)
        assert not t.paused and correlation_ids(t.writes) == [1, 2, 3]
    asyncio.run(run())


def test_a_failing_deferred_answer_closes_with_one_line(caplog: Any) -> None:
    async def run() -> None:
        p, t, queue = setup()
        p.data_received(fetch(1))
        future = next(iter(p.waiting))
        with caplog.at_level(logging.INFO, logger="smartbroker.kafka"):
            future.set_exception(RuntimeError("boom"))
            await asyncio.sleep(0)
        assert t.closed and t.writes == []
    asyncio.run(run())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "closing Kafka connection 127.0.0.1:5555: RuntimeError: boom"]
    assert all(r.exc_info is None for r in errors)
