"""``x-dead-letter-strategy: at-least-once`` on a quorum queue (RabbitMQ 3.10): with
``x-overflow: reject-publish`` a dead-lettered message stays in the source queue, counted
in ``messages_dlx``/``message_bytes_dlx`` and in the reject-publish limit, until its
target confirms it; with drop-head it falls back to at-most-once. Every test here passes
against RabbitMQ 3.10.8 too (SMARTBROKER_TEST_URL, SMARTBROKER_TEST_API; its management
counters lag up to 5 s, hence the waits)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.conftest import BrokerProcess

from .deadletter_helpers import get_one
from .helpers import connect, wait_until
from .lifecycle_helpers import api_base, api_request, collect_one, declare_dlq, dlx_args

QQ = {"x-queue-type": "quorum"}
AT_LEAST_ONCE = {**QQ, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
STATS_WAIT = 20.0  # RabbitMQ refreshes queue stats every 5 s


@pytest.fixture
def quorum(broker_url: str, qname: str) -> Iterator[str]:
    """Name for the source quorum queue (and ``.target``); both deleted afterwards."""
    yield qname + ".qq"
    with connect(broker_url) as c:
        ch = c.channel()
        ch.queue_delete(qname + ".qq")
        ch.queue_delete(qname + ".qq.target")


def _stats(broker: Any, queue: str) -> dict[str, Any]:
    status, q = api_request(api_base(broker), "GET", f"/api/queues/%2F/{quote(queue, safe='')}")
    assert status == 200
    return q


def _wait_stats(conn: pika.BlockingConnection, broker: Any, queue: str, **want: int) -> None:
    def matches() -> bool:
        q = _stats(broker, queue)
        return all(q.get(key) == value for key, value in want.items())
    wait_until(conn, matches, timeout=STATS_WAIT)


def _reject_one(ch: BlockingChannel, queue: str) -> None:
    got = get_one(ch, queue)
    ch.basic_reject(got.method.delivery_tag, requeue=False)


def _publish(ch: BlockingChannel, queue: str, body: bytes) -> str:
    try:
        ch.basic_publish("", queue, body)
    except pika.exceptions.NackError:
        return "nack"
    return "ack"


def test_at_least_once_delivers_to_the_target(ch: BlockingChannel, quorum: str) -> None:
    """A routable dead letter reaches its target, with RabbitMQ's x-death, and leaves the
    source queue."""
    dlq = declare_dlq(ch, quorum + ".dlq")
    ch.queue_declare(quorum, durable=True, arguments=dlx_args(dlq, **AT_LEAST_ONCE))
    ch.basic_publish("", quorum, b"m")
    _reject_one(ch, quorum)
    dead = collect_one(ch, dlq)
    assert dead.body == b"m"
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert dead.headers["x-death"][0]["queue"] == quorum
    assert ch.queue_declare(quorum, passive=True).method.message_count == 0


def test_unroutable_dead_letters_stay_and_count_in_the_limit(
        broker: Any, conn: pika.BlockingConnection, ch: BlockingChannel, quorum: str) -> None:
    """No route: the message stays, in messages_dlx / message_bytes_dlx and messages (not
    messages_ready), and counts in x-max-length: the next publish crosses the limit (ready
    1 + dead-letter 1 > 1), so the one after is nacked, where at-most-once would take it."""
    ch.queue_declare(quorum, durable=True, arguments={
        **AT_LEAST_ONCE, "x-max-length": 1, "x-dead-letter-exchange": "amq.direct",
        "x-dead-letter-routing-key": "nowhere"})
    ch.confirm_delivery()
    assert _publish(ch, quorum, b"12345") == "ack"
    _reject_one(ch, quorum)
    _wait_stats(conn, broker, quorum, messages_dlx=1, message_bytes_dlx=5, messages_ready=0,
                messages=1)
    assert ch.queue_declare(quorum, passive=True).method.message_count == 0
    assert [_publish(ch, quorum, b"x") for _ in range(2)] == ["ack", "nack"]


def test_a_refusing_target_keeps_the_message_in_the_source(
        broker: Any, conn: pika.BlockingConnection, ch: BlockingChannel, quorum: str) -> None:
    """The target (a full reject-publish quorum queue) nacks the copy: the source holds the
    message (at-most-once would have lost it)."""
    target = quorum + ".target"
    ch.queue_declare(target, durable=True, arguments={
        **QQ, "x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_declare(quorum, durable=True, arguments=dlx_args(target, **AT_LEAST_ONCE))
    ch.confirm_delivery()
    assert [_publish(ch, target, b"t") for _ in range(3)] == ["ack", "ack", "nack"]
    ch.basic_publish("", quorum, b"m")
    _reject_one(ch, quorum)
    _wait_stats(conn, broker, quorum, messages_dlx=1, message_bytes_dlx=1, messages=1)
    assert ch.queue_declare(target, passive=True).method.message_count == 2


def test_at_least_once_without_reject_publish_is_at_most_once(
        broker: Any, conn: pika.BlockingConnection, ch: BlockingChannel, quorum: str) -> None:
    """rabbit_quorum_queue:dlh/5: at-least-once with drop-head overflow falls back to
    at-most-once: an unroutable dead letter is dropped, nothing waits in messages_dlx."""
    ch.queue_declare(quorum, durable=True, arguments={
        **QQ, "x-dead-letter-strategy": "at-least-once",
        "x-dead-letter-exchange": "amq.direct", "x-dead-letter-routing-key": "nowhere"})
    ch.basic_publish("", quorum, b"m")
    _wait_stats(conn, broker, quorum, messages=1)
    _reject_one(ch, quorum)
    _wait_stats(conn, broker, quorum, messages=0, messages_dlx=0, messages_unacknowledged=0)


def test_held_dead_letters_survive_a_kill(own_broker: BrokerProcess, uid: str) -> None:
    """The hold is on disk (RabbitMQ keeps its discards in the Raft log): a dead letter its
    full target refused is, after a kill -9, neither lost nor back in the source's ready
    messages; the restarted broker forwards it (the target's reject-publish block, memory
    only, is gone, as in RabbitMQ)."""
    source, target = f"qq.dlx.{uid}", f"qq.dlx.{uid}.target"
    c = connect(own_broker.url)
    ch = c.channel()
    ch.queue_declare(target, durable=True, arguments={
        **QQ, "x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_declare(source, durable=True, arguments=dlx_args(target, **AT_LEAST_ONCE))
    ch.confirm_delivery()
    assert [_publish(ch, target, b"t") for _ in range(3)] == ["ack", "ack", "nack"]
    ch.basic_publish("", source, b"m")
    _reject_one(ch, source)
    _wait_stats(c, own_broker, source, messages_dlx=1)
    own_broker.kill()
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        c.close()
    own_broker.start()
    with connect(own_broker.url) as c:
        ch = c.channel()
        wait_until(c, lambda: ch.queue_declare(target, passive=True).method.message_count == 3)
        assert ch.queue_declare(source, passive=True).method.message_count == 0
        _wait_stats(c, own_broker, source, messages_dlx=0, messages=0)
        bodies = [get_one(ch, target).body for _ in range(3)]
        assert bodies == [b"t", b"t", b"m"]


def test_strategy_from_a_policy(broker: Any, conn: pika.BlockingConnection, ch: BlockingChannel,
                                quorum: str) -> None:
    """``dead-letter-strategy`` is a policy key too (the queue argument would win); when
    the policy goes, so does the strategy, and the held message with it."""
    base = api_base(broker)
    path = f"/api/policies/%2F/{quote(quorum, safe='')}"
    status, _ = api_request(base, "PUT", path, {
        "pattern": f"^{quorum}$", "apply-to": "queues", "definition": {
            "dead-letter-strategy": "at-least-once", "overflow": "reject-publish",
            "dead-letter-exchange": "amq.direct", "dead-letter-routing-key": "nowhere"}})
    assert status in (201, 204)
    try:
        ch.queue_declare(quorum, durable=True, arguments=QQ)
        ch.basic_publish("", quorum, b"m")
        _reject_one(ch, quorum)
        _wait_stats(conn, broker, quorum, messages_dlx=1, messages=1)
    finally:
        api_request(base, "DELETE", path)
    # no longer at-least-once: the held message is deleted (rabbit_fifo_dlx:switch_from)
    _wait_stats(conn, broker, quorum, messages_dlx=0, messages=0)
    status, _ = api_request(base, "PUT", path, {
        "pattern": "^nothing$", "definition": {"dead-letter-strategy": "sometimes"}})
    assert status == 400
