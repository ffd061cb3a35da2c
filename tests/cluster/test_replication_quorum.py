"""Replicated quorum queues on three real nodes and a real etcd (issue 16), with pika.

- a quorum queue gets ``x-quorum-initial-group-size`` members (default 3), each keeping
  the queue's own log (deleted with the queue); a size of 1 is today's unreplicated queue;
- x-delivery-limit and dead-lettering work as on one node;
- kill -9 of the leader while a publisher confirms through another node: every confirmed
  message is there afterwards, consumed from a survivor in publishing order, duplicates
  only among those unconfirmed, failover well under 10 s; a consumer on a surviving node
  carries on (its unacked message comes back redelivered); the old leader restarted
  catches up as a follower;
- SIGSTOP of the leader then SIGCONT: whatever its node confirmed is in the queue.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import (
    all_members,
    member_nodes,
    poll,
    start_all,
    stop_all,
)
from tests.cluster.quorum_clients import (
    HeldConsumer,
    PipelinedPublisher,
    Publisher,
    _get,
    check_confirmed,
    connect,
    drain,
    in_sync,
)

NAMES = ("n1", "n2", "n3")
QUORUM = {"x-queue-type": "quorum"}
FAILOVER = 10.0  # seconds: the bound with the default timeouts (tests use 3 s leases)


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("quorum-replicated"), etcd.endpoint, NAMES) as procs:
        yield procs


def declare(node: BrokerProcess, name: str, **arguments: Any) -> None:
    conn = connect(node)
    try:
        conn.channel().queue_declare(name, durable=True, arguments={**QUORUM, **arguments})
    finally:
        conn.close()


def described(node: BrokerProcess, name: str) -> dict[str, Any] | None:
    try:
        return node.get_json(f"/api/queues/%2F/{name}")
    except Exception:  # noqa: BLE001 - not there (yet), or the node is down
        return None


def replicated(nodes: dict[str, BrokerProcess], name: str) -> dict[str, Any]:
    """The queue's description once every node names the same three members."""
    def agreed() -> dict[str, Any] | None:
        found = [described(n, name) for n in nodes.values()]
        if all(f is not None and sorted(f.get("members", ())) == sorted(NAMES) for f in found):
            return found[0]
        return None

    return poll(agreed, f"every node names 3 members of {name}")


def leader_of(nodes: dict[str, BrokerProcess], name: str, via: str) -> str:
    found = described(nodes[via], name)
    assert found is not None
    return found["leader"]


def test_members_and_their_logs(nodes: dict[str, BrokerProcess]) -> None:
    declare(nodes["n1"], "qr-members")
    info = replicated(nodes, "qr-members")
    assert info["leader"] == "n1" and info["members"][0] == "n1"
    for node in nodes.values():  # each member keeps the queue's own log
        poll(lambda n=node: (n.data_dir / "quorum" / "%2F%2Fqr-members").is_dir(),
             f"{node.node_name} holds the log")
    conn = connect(nodes["n3"])  # deleted through a follower's node: every copy goes
    try:
        conn.channel().queue_delete("qr-members")
    finally:
        conn.close()
    for node in nodes.values():
        poll(lambda n=node: not (n.data_dir / "quorum" / "%2F%2Fqr-members").exists(),
             f"{node.node_name} deleted its copy")
    poll(lambda: in_sync(nodes["n1"], "qr-members") == (), "its replica keys deleted")
    declare(nodes["n2"], "qr-single", **{"x-quorum-initial-group-size": 1})
    single = poll(lambda: described(nodes["n2"], "qr-single"), "qr-single listed")
    assert single["members"] == ["n2"]
    assert not (nodes["n2"].data_dir / "quorum" / "%2F%2Fqr-single").exists()


def test_delivery_limit_and_dead_lettering(nodes: dict[str, BrokerProcess]) -> None:
    conn = connect(nodes["n1"])
    try:
        ch = conn.channel()
        ch.queue_declare("qr-dead", durable=True)
        ch.queue_declare("qr-limited", durable=True, arguments={
            **QUORUM, "x-delivery-limit": 1, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "qr-dead"})
    finally:
        conn.close()
    replicated(nodes, "qr-limited")
    conn = connect(nodes["n2"])  # through a follower's node
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "qr-limited", b"poison")
        for count in (0, 1):  # basic.get counts from 0; returned twice: past the limit of 1
            method, props, body = poll(lambda: _get(ch, "qr-limited"), "the message")
            assert body == b"poison"
            assert (props.headers or {}).get("x-delivery-count") == count
            ch.basic_nack(method.delivery_tag, requeue=True)
        dead = poll(lambda: _get(ch, "qr-dead", ack=True), "dead-lettered")
        assert dead[2] == b"poison"
        assert dead[1].headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        conn.close()


def test_kill_the_leader(nodes: dict[str, BrokerProcess]) -> None:
    for queue in ("qr-kill", "qr-kill-pipelined", "qr-consumed-1", "qr-consumed-2"):
        declare(nodes["n1"], queue)
        replicated(nodes, queue)
    old = leader_of(nodes, "qr-kill", "n2")
    survivors = [n for n in NAMES if n != old]
    via, reader = nodes[survivors[0]], nodes[survivors[1]]
    feed = connect(via).channel()
    feed.confirm_delivery()
    # a consumer on each surviving node (one of them will lead next), each holding one
    # message unacked at the kill
    held = [HeldConsumer(reader, "qr-consumed-1", feed), HeldConsumer(via, "qr-consumed-2", feed)]
    publisher = Publisher(via, "qr-kill")
    publisher.start()
    pipelined = PipelinedPublisher(reader, "qr-kill-pipelined")
    pipelined.start()
    poll(lambda: len(publisher.confirmed) >= 200 and len(pipelined.confirmed) >= 500,
         "confirms before the kill")
    killed_at = time.monotonic()
    nodes[old].kill()
    try:
        poll(lambda: publisher.confirmed_at and publisher.confirmed_at[-1] > killed_at + 0.01,
             "a confirm after the kill", timeout=FAILOVER + 5)
        failover = publisher.confirmed_at[-1] - killed_at
        poll(lambda: len(publisher.confirmed) >= 400, "200 more confirmed after the failover")
        confirmed = len(pipelined.confirmed)
        poll(lambda: len(pipelined.confirmed) >= confirmed + 500, "pipelined confirms after")
        for thread in (publisher, pipelined):
            thread.stop.set()
            thread.join(15)
            assert thread.error is None, thread.error
        assert failover < FAILOVER, f"failover took {failover:.1f}s"
        # the consumers carried on: the message each held comes back redelivered (its ack
        # of the old leader's delivery frees its prefetch), then new messages follow
        for i, consumer in enumerate(held, 1):
            consumer.ch.basic_ack(consumer.seen[0][2])
            consumer.ch.basic_ack(consumer.wait(b"held", True))
            feed.basic_publish("", f"qr-consumed-{i}", b"after")
            consumer.wait(b"after", False)
        got = drain(reader, "qr-kill", len(publisher.confirmed))
        check_confirmed(publisher, [n for n, _ in got])
        got = drain(via, "qr-kill-pipelined", len(pipelined.confirmed))
        check_confirmed(pipelined, [n for n, _ in got])
    finally:
        for consumer in held:
            consumer.conn.close()
        feed.connection.close()
        nodes[old].restart()
    # the old leader caught up as a follower: back in the in-sync set, and it serves the
    # queue through the new leader
    new = leader_of(nodes, "qr-kill", survivors[0])
    assert new != old
    poll(lambda: old in in_sync(nodes[old], "qr-kill"), f"{old} back in the ISR", timeout=30)
    feed = connect(nodes[old]).channel()
    feed.confirm_delivery()
    poll(lambda: _published(feed, "qr-kill", b"back"), "a publish through the old leader")


def _published(ch: Any, queue: str, body: bytes) -> bool:
    try:
        ch.basic_publish("", queue, body)
        return True
    except pika.exceptions.NackError:
        return False


def test_pause_the_leader(nodes: dict[str, BrokerProcess]) -> None:
    for queue in ("qr-pause", "qr-pause-consumed"):
        declare(nodes["n2"], queue)
        replicated(nodes, queue)
    old = leader_of(nodes, "qr-pause", "n1")
    other = next(n for n in NAMES if n != old)
    # a publisher on the paused node: what it confirms after SIGCONT must be in the queue;
    # a consumer there too, which carries on once its node follows
    feed = connect(nodes[old]).channel()
    feed.confirm_delivery()
    held = HeldConsumer(nodes[old], "qr-pause-consumed", feed)
    on_old = Publisher(nodes[old], "qr-pause")
    on_old.start()
    poll(lambda: len(on_old.confirmed) >= 50, "confirms before the pause")
    os.kill(nodes[old].pid, signal.SIGSTOP)
    try:
        poll(lambda: (d := described(nodes[other], "qr-pause")) is not None
             and d["leader"] != old, "a new leader while the old one is paused",
             timeout=FAILOVER + 5)
    finally:
        os.kill(nodes[old].pid, signal.SIGCONT)
    try:
        poll(lambda: len(on_old.confirmed) >= 100, "publishing through the old node again")
        on_old.stop.set()
        on_old.join(10)
        assert on_old.error is None, on_old.error
        got = drain(nodes[other], "qr-pause", len(on_old.confirmed))
        check_confirmed(on_old, [n for n, _ in got])
        poll(lambda: described(nodes[old], "qr-pause-consumed")["leader"] != old,
             "the old leader's node follows")
        held.ch.basic_ack(held.seen[0][2])
        held.ch.basic_ack(held.wait(b"held", True))
        feed.basic_publish("", "qr-pause-consumed", b"after")
        held.wait(b"after", False)
    finally:
        held.conn.close()
        feed.connection.close()


def test_delete_and_declare_again(nodes: dict[str, BrokerProcess]) -> None:
    """A client suite's habit: delete a quorum queue and declare it again at once."""
    conn = connect(nodes["n1"])
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for round_ in range(3):
            ch.queue_declare("qr-again", durable=True, arguments=QUORUM)
            for i in range(5):
                ch.basic_publish("", "qr-again", f"{round_}-{i}".encode())
            if round_ < 2:
                ch.queue_delete("qr-again")
    finally:
        conn.close()
    replicated(nodes, "qr-again")
    conn = connect(nodes["n2"])
    try:
        ch = conn.channel()
        bodies = [poll(lambda: _get(ch, "qr-again", ack=True), "a message")[2]
                  for _ in range(5)]
        assert bodies == [f"2-{i}".encode() for i in range(5)]
        assert _get(ch, "qr-again") is None
    finally:
        conn.close()


def test_whole_cluster_restart(nodes: dict[str, BrokerProcess]) -> None:
    """Every node stopped, then started again: the queue is rebuilt from the logs."""
    declare(nodes["n3"], "qr-restart")
    replicated(nodes, "qr-restart")
    conn = connect(nodes["n1"])
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", "qr-restart", str(i).encode())
        assert _get(ch, "qr-restart") is not None  # 0 delivered, then its channel closes
    finally:
        conn.close()
    stop_all(nodes.values())
    start_all(nodes.values())
    all_members(nodes.values())
    got = drain(nodes["n2"], "qr-restart", 20)
    assert [n for n, _ in got] == list(range(20))
    assert got[0][1]  # delivered before the restart: redelivered
