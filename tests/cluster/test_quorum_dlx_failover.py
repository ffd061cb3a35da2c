"""At-least-once dead-lettering on a replicated quorum queue (three real nodes, etcd): the
hold is in the queue's own log, so after kill -9 of the leader the new leader has the
held message in its dead-letter stage (not in the queue) and forwards it itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import (
    member_nodes,
    poll,
)

NAMES = ("n1", "n2", "n3")
SOURCE, TARGET = "qdlx-source", "qdlx-target"
AT_LEAST_ONCE = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                 "x-overflow": "reject-publish", "x-dead-letter-exchange": "amq.direct",
                 "x-dead-letter-routing-key": "qdlx"}


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("quorum-dlx"), etcd.endpoint, NAMES) as procs:
        yield procs


def described(node: BrokerProcess, name: str) -> dict[str, Any] | None:
    try:
        return node.get_json(f"/api/queues/%2F/{name}")
    except Exception:  # noqa: BLE001 - not there (yet), or the node is down
        return None


def _get(ch: Any, queue: str) -> tuple[Any, Any, bytes] | None:
    method, props, body = ch.basic_get(queue, auto_ack=False)
    return None if method is None else (method, props, body)


def test_the_hold_survives_a_leader_kill(nodes: dict[str, BrokerProcess]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    ch = conn.channel()
    ch.queue_declare(SOURCE, durable=True, arguments=AT_LEAST_ONCE)
    poll(lambda: all(sorted((described(n, SOURCE) or {}).get("members", ())) == list(NAMES)
                     for n in nodes.values()), "three members everywhere")
    leader = nodes[described(nodes["n1"], SOURCE)["leader"]]  # type: ignore[index]
    via = next(n for n in nodes.values() if n is not leader)
    conn.close()

    conn = pika.BlockingConnection(pika.URLParameters(via.url))  # through a follower's node
    ch = conn.channel()
    ch.queue_declare(TARGET, durable=True)  # a classic queue on a node that survives
    ch.confirm_delivery()
    ch.basic_publish("", SOURCE, b"held")
    method, _, body = poll(lambda: _get(ch, SOURCE), "the message")
    ch.basic_reject(method.delivery_tag, requeue=False)  # no route yet: held
    poll(lambda: (described(leader, SOURCE) or {}).get("messages_dlx") == 1, "held by the leader")
    ch.queue_bind(TARGET, "amq.direct", "qdlx")  # routable from now on (retried in 2 min)
    assert ch.queue_declare(SOURCE, passive=True).method.message_count == 0
    # confirmed once the replica set holds the log up to it, the reject's hold included
    # (a settlement not yet committed when the leader dies is lost, as an uncommitted Raft
    # command is: the message would be back in the queue, redelivered, not in the hold)
    ch.basic_publish("", SOURCE, b"after")
    conn.close()

    leader.kill()
    try:
        survivor = via
        # the new leader rebuilds the hold from its copy of the log and forwards it at once
        conn = pika.BlockingConnection(pika.URLParameters(survivor.url))
        ch = conn.channel()
        got = poll(lambda: _get(ch, TARGET), "the dead letter at the target", timeout=30)
        assert got[2] == b"held"
        assert got[1].headers["x-death"][0]["reason"] == "rejected"
        ch.basic_ack(got[0].delivery_tag)
        assert ch.queue_declare(SOURCE, passive=True).method.message_count == 1  # "after"
        new = poll(lambda: (described(survivor, SOURCE) or {}).get("leader") not in
                   (None, leader.node_name) and described(survivor, SOURCE), "a new leader")
        poll(lambda: (described(nodes[new["leader"]], SOURCE) or {}).get("messages_dlx") == 0,
             "released by the new leader")
        conn.close()
    finally:
        with contextlib.suppress(Exception):
            leader.restart()
