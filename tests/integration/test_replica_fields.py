"""/api/queues's replica fields on one node, as RabbitMQ 3.10 shows them: a quorum queue
has ``leader``, ``members`` and ``online`` (all this node) and ``node`` its leader, in the
list and in the queue's own page, with the quorum counters; a stream has ``members`` and
``online``; a classic queue none of them. Every test here passes against RabbitMQ 3.10.8
(SMARTBROKER_TEST_URL and SMARTBROKER_TEST_API), whose statistics arrive a few seconds
after the declare: the tests poll until the queue's page has them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import connect
from .lifecycle_helpers import api_base, api_request

REPLICA_FIELDS = ("leader", "members", "online")


@pytest.fixture
def names(broker_url: str, qname: str) -> Iterator[str]:
    """A prefix for the queues a test declares; they are deleted afterwards."""
    yield qname
    with connect(broker_url) as c:
        ch = c.channel()
        for suffix in (".qq", ".st", ".cl"):
            ch.queue_delete(qname + suffix)


def _node(base: str) -> str:
    status, overview = api_request(base, "GET", "/api/overview")
    assert status == 200
    return overview["node"]


def _page(base: str, name: str, *keys: str, timeout: float = 15.0) -> dict[str, Any]:
    """The queue's page once it shows ``keys`` (RabbitMQ: its stats have been emitted)."""
    deadline = time.monotonic() + timeout
    while True:
        status, q = api_request(base, "GET", f"/api/queues/%2F/{quote(name, safe='')}")
        if status == 200 and all(k in q for k in keys):
            return q
        assert time.monotonic() < deadline, f"queue {name} never showed {keys}: {q}"
        time.sleep(0.1)


def _listed(base: str, name: str) -> dict[str, Any]:
    status, rows = api_request(base, "GET", "/api/queues/%2F")
    assert status == 200
    return next(row for row in rows if row["name"] == name)


def test_quorum_queue_shows_leader_members_online(broker: Any, ch: BlockingChannel,
                                                  names: str) -> None:
    base = api_base(broker)
    node = _node(base)
    ch.queue_declare(names + ".qq", durable=True, arguments={"x-queue-type": "quorum"})
    q = _page(base, names + ".qq", *REPLICA_FIELDS, "messages_dlx")
    assert (q["type"], q["node"], q["leader"], q["members"], q["online"]) == (
        "quorum", node, node, [node], [node])
    assert (q["messages_dlx"], q["message_bytes_dlx"], q["single_active_consumer_ctag"]) == (
        0, 0, None)
    row = _listed(base, names + ".qq")
    assert (row["node"], row["leader"], row["members"], row["online"]) == (
        node, node, [node], [node])


def test_single_active_consumer_tag(broker: Any, ch: BlockingChannel, names: str) -> None:
    base = api_base(broker)
    ch.queue_declare(names + ".qq", durable=True, arguments={
        "x-queue-type": "quorum", "x-single-active-consumer": True})
    ch.basic_consume(names + ".qq", lambda *a: None, consumer_tag="first")
    ch.basic_consume(names + ".qq", lambda *a: None, consumer_tag="second")
    deadline = time.monotonic() + 15
    while _page(base, names + ".qq", "single_active_consumer_ctag").get(
            "single_active_consumer_ctag") != "first":
        assert time.monotonic() < deadline
        ch.connection.process_data_events(time_limit=0.1)


def test_stream_shows_members_online(broker: Any, ch: BlockingChannel, names: str) -> None:
    base = api_base(broker)
    node = _node(base)
    ch.queue_declare(names + ".st", durable=True, arguments={"x-queue-type": "stream"})
    q = _page(base, names + ".st", "members", "online")
    assert (q["type"], q["node"], q["members"], q["online"]) == ("stream", node, [node], [node])


def test_classic_queue_has_no_replica_fields(broker: Any, ch: BlockingChannel,
                                             names: str) -> None:
    base = api_base(broker)
    ch.queue_declare(names + ".cl", durable=True)
    q = _page(base, names + ".cl", "node")
    assert q["type"] == "classic"
    assert not set(REPLICA_FIELDS) & set(q)
