"""DLQ tools on a real VirtualHost (no socket): inspect, redrive, dry-run, unroutable."""

from __future__ import annotations

from pamqp import commands

from smartbroker.broker.vhost import VirtualHost
from smartbroker.dlq import tools
from smartbroker.message import Message
from smartbroker.queues.base import Settle


def _setup() -> tuple[VirtualHost, object, object]:
    vh = VirtualHost("/")
    vh.declare_exchange("dlx", "fanout")
    vh.declare_exchange("work", "direct")
    work, _ = vh.declare_queue("work.q", arguments={"x-dead-letter-exchange": "dlx"})
    dlq, _ = vh.declare_queue("work.dlq")
    vh.bind("work", work, "jobs", {})
    vh.bind("dlx", dlq, "", {})
    return vh, work, dlq


def _kill(vh: VirtualHost, work, body: bytes) -> None:
    msg = Message.build("work", "jobs", body, commands.Basic.Properties(content_type="text/plain"))
    for q in vh.route(vh.exchanges["work"], msg, ["jobs"]):
        q.publish(msg)
    entry = work.get()
    vh.perform(work.settle(Settle.DISCARD, [entry]))


def test_inspect_shows_reason_source_and_preview_without_consuming() -> None:
    vh, work, dlq = _setup()
    _kill(vh, work, b"poison pill")
    seen = tools.inspect(dlq, limit=10)
    assert len(seen) == 1
    dead = seen[0]
    assert (dead.reason, dead.queue, dead.exchange, dead.routing_keys, dead.count) == (
        "rejected", "work.q", "work", ["jobs"], 1)
    assert dead.body_preview == "poison pill"
    assert dlq.message_count == 1  # browsing did not consume


def test_redrive_moves_back_to_origin_and_keeps_history() -> None:
    vh, work, dlq = _setup()
    for i in range(3):
        _kill(vh, work, f"m{i}".encode())
    assert dlq.message_count == 3
    result = tools.redrive(vh, dlq, limit=2)
    assert result.moved == 2
    assert dlq.message_count == 1
    assert work.message_count == 2
    entry = work.get()
    assert entry.message.body == b"m0"
    assert entry.message.headers["x-death"][0]["count"] == 1  # history travels along


def test_dry_run_changes_nothing() -> None:
    vh, work, dlq = _setup()
    _kill(vh, work, b"x")
    result = tools.redrive(vh, dlq, dry_run=True)
    assert result.moved == 0
    assert result.planned == [{"exchange": "work", "routing_keys": ["jobs"]}]
    assert dlq.message_count == 1 and work.message_count == 0


def test_unroutable_messages_stay_in_the_dlq() -> None:
    vh, work, dlq = _setup()
    _kill(vh, work, b"x")
    vh.unbind("work", work, "jobs", {})
    result = tools.redrive(vh, dlq)
    assert (result.moved, result.unroutable) == (0, 1)
    assert dlq.message_count == 1


def test_redrive_to_another_exchange() -> None:
    vh, work, dlq = _setup()
    _kill(vh, work, b"x")
    vh.declare_exchange("retry", "fanout")
    retry_q, _ = vh.declare_queue("retry.q")
    vh.bind("retry", retry_q, "", {})
    assert tools.redrive(vh, dlq, to_exchange="retry").moved == 1
    assert retry_q.message_count == 1 and dlq.message_count == 0
