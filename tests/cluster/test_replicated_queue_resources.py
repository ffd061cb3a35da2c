"""Many replicated quorum queues on three real nodes: bounded resources (issue 16, and
"no client can hurt another").

- 300 quorum queues (three members each) declared through one node leave every node's
  open descriptors within the segment-file bound above where they started (each queue's
  log used to hold its directory open: a descriptor per queue on every member, and a
  client declaring queues could exhaust the broker's, so connections failed); each queue
  still takes a message and gives it back, and new connections are accepted;
- a vhost's ``max-queues`` limit covers replicated declares on every node, refused as
  RabbitMQ refuses it (406 PRECONDITION_FAILED, its text).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.http_api import call, get
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all

NAMES = ("n1", "n2", "n3")
QUEUES = 300
SEGMENT_FILES = 32  # the broker-wide bound on open segment files (store/handles.py)
SLACK = 24  # sockets and files a node opens meanwhile (the clients' connections, etcd's)
QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("replicated-resources")
    cluster = f"res-{free_port()}"
    procs = [cluster_node(tmp, n, etcd.endpoint, cluster,
                          env={"SMARTBROKER_SEGMENT_FILES": str(SEGMENT_FILES)})
             for n in NAMES]
    try:
        start_all(procs)
        all_members(procs)  # members are the nodes up at the declare
        yield procs
    finally:
        stop_all(procs)


def descriptors(proc: BrokerProcess) -> int:
    return len(os.listdir(f"/proc/{proc.pid}/fd"))


def copies(proc: BrokerProcess) -> int:
    """The quorum queue logs this node holds (one directory per queue it is a member of)."""
    root = Path(proc.data_dir) / "quorum"
    return len(os.listdir(root)) if root.exists() else 0


def connect(proc: BrokerProcess, vhost: str = "/") -> pika.BlockingConnection:
    params = pika.URLParameters(proc.url)
    params.virtual_host = vhost
    return pika.BlockingConnection(params)


def test_many_replicated_queues_keep_descriptors_bounded(nodes: list[BrokerProcess]) -> None:
    start = {p.node_name: descriptors(p) for p in nodes}
    start_copies = {p.node_name: copies(p) for p in nodes}
    conn = connect(nodes[0])
    ch = conn.channel()
    names = [f"res-{i}" for i in range(QUEUES)]
    for name in names:
        ch.queue_declare(name, durable=True, arguments=QUORUM)
    for p in nodes:  # three members each, on three nodes: a copy of every queue on each
        poll(lambda p=p: copies(p) - start_copies[p.node_name] >= QUEUES,
             f"{p.node_name} holds a copy of every queue", 60)

    def bounded() -> bool:
        return all(descriptors(p) - start[p.node_name] <= SEGMENT_FILES + SLACK for p in nodes)

    # segment files awaiting their first fsync stay open a moment beyond the bound
    poll(bounded, f"every node within {SEGMENT_FILES + SLACK} descriptors of its start: "
         f"{ {p.node_name: descriptors(p) - start[p.node_name] for p in nodes} }", 30)

    ch.confirm_delivery()
    for name in names:
        ch.basic_publish("", name, name.encode(), pika.BasicProperties(delivery_mode=2))
    for name in names:
        _method, _props, body = ch.basic_get(name, auto_ack=True)
        assert body == name.encode()
    conn.close()
    for p in nodes:  # every node still accepts clients
        connect(p).close()
    poll(bounded, "descriptors still bounded after a message through every queue", 30)


def test_max_queues_covers_replicated_declares(nodes: list[BrokerProcess]) -> None:
    vhost, limit = "limited", 3
    assert call(nodes[0], f"/api/vhosts/{vhost}", {}, method="PUT")[0] in (201, 204)
    assert call(nodes[0], f"/api/permissions/{vhost}/guest",
                {"configure": ".*", "write": ".*", "read": ".*"}, method="PUT")[0] in (201, 204)
    assert call(nodes[1], f"/api/vhost-limits/{vhost}/max-queues", {"value": limit},
                method="PUT")[0] == 204
    for p in nodes:
        poll(lambda p=p: any(v.get("value", {}).get("max-queues") == limit
                             for v in get(p, f"/api/vhost-limits/{vhost}")),
             f"{p.node_name} knows the limit")
    conn = connect(nodes[0], vhost)
    ch = conn.channel()
    for i in range(limit):
        ch.queue_declare(f"lim-{i}", durable=True, arguments=QUORUM)
    conn.close()
    for p in nodes:  # every node counts the queues declared elsewhere
        poll(lambda p=p: len(get(p, f"/api/queues/{vhost}")) == limit,
             f"{p.node_name} lists the {limit} queues")
    for p in nodes:
        conn = connect(p, vhost)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            conn.channel().queue_declare(f"over-{p.node_name}", durable=True, arguments=QUORUM)
        assert refused.value.reply_code == 406
        assert refused.value.reply_text == (
            f"PRECONDITION_FAILED - cannot declare queue 'over-{p.node_name}': queue limit in "
            f"vhost '{vhost}' ({limit}) is reached")
        conn.close()
    assert len(get(nodes[2], f"/api/queues/{vhost}")) == limit
