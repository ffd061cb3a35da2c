"""A paused node, once resumed, hands its consumers nothing the cluster gave others
meanwhile (issue 16: "unacked messages are redelivered with redelivered=true").

The chaos run's shape (benchmarks/results/chaos-2026-12-05-third.json, nine messages,
each confirmed, delivered flagged by a new leader, then again WITHOUT the flag to a
consumer on the node that had been paused, as it resumed). Two paths, one test each:

- the paused node led the queue: messages wait ready behind its consumer's prefetch;
  the new leader delivers them, flagged, to a consumer elsewhere; the resumed node read
  its consumer's ack before its lease check ran and handed it the next ready message
  (fixed by ``QuorumQueue.serves``);
- the paused node only had a consumer: the leader relayed deliveries to it while it was
  paused, then gave up on it and gave them to another consumer, flagged; the resumed
  node read the relayed copies from its socket (fixed by ``ClusterLink.given_up``).

Three real nodes, pika clients, SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import member_nodes, poll
from tests.cluster.quorum_clients import connect, drain

NAMES = ("n1", "n2", "n3")
FAILOVER = 15.0  # seconds: 3 s leases in tests, a busy machine


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("quorum-deposed"), etcd.endpoint, NAMES) as procs:
        yield procs


def described(node: BrokerProcess, name: str) -> dict[str, Any] | None:
    try:
        return node.get_json(f"/api/queues/%2F/{name}")
    except Exception:  # noqa: BLE001 - not there yet, or the node is paused
        return None


def test_a_resumed_leader_delivers_nothing_more(nodes: dict[str, BrokerProcess]) -> None:
    queue = "qd-paused"
    conn = connect(nodes["n1"])
    try:  # declared through n1: led there
        conn.channel().queue_declare(queue, durable=True, arguments={
            "x-queue-type": "quorum", "x-queue-leader-locator": "client-local"})
    finally:
        conn.close()
    poll(lambda: all((d := described(n, queue)) is not None and len(d.get("online", ())) == 3
                     for n in nodes.values()), "three members online everywhere")
    old = described(nodes["n2"], queue)["leader"]  # type: ignore[index]
    other = next(n for n in NAMES if n != old)
    # a consumer on the leader's node at prefetch 1: the rest stays ready behind it
    held = connect(nodes[old])
    held_ch = held.channel()
    held_ch.basic_qos(prefetch_count=1)
    seen: list[tuple[bytes, bool, int]] = []
    held_ch.basic_consume(queue, lambda _c, m, _p, b: seen.append((b, m.redelivered,
                                                                   m.delivery_tag)))
    feed_conn = connect(nodes[other])
    feed = feed_conn.channel()
    feed.confirm_delivery()
    try:
        for i in range(5):
            feed.basic_publish("", queue, str(i).encode())  # each one confirmed
        poll(lambda: held.process_data_events(time_limit=0.05) or seen, "the first delivery")
        assert seen == [(b"0", False, seen[0][2])]
        os.kill(nodes[old].pid, signal.SIGSTOP)
        try:
            poll(lambda: (d := described(nodes[other], queue)) is not None
                 and d["leader"] not in (None, old), "a new leader", timeout=FAILOVER)
            # the new leader gives every one back flagged (0 was delivered; any of the
            # others may have been), to a consumer on a surviving node, which acks them
            got = drain(nodes[other], queue, 5)
            assert sorted(n for n, _ in got) == [0, 1, 2, 3, 4]
            assert all(redelivered for _, redelivered in got), got
            held_ch.basic_ack(seen[0][2])  # waits in the paused node's socket
        finally:
            os.kill(nodes[old].pid, signal.SIGCONT)
        poll(lambda: (d := described(nodes[old], queue)) is not None and d["leader"] != old,
             "the old leader's node follows", timeout=FAILOVER)
        # the held consumer carried on at the new leader: the next message it gets is a
        # new one; nothing of the old leader's ready messages came in between
        feed.basic_publish("", queue, b"after")

        acked = 1

        def came() -> bool:
            nonlocal acked
            held.process_data_events(time_limit=0.05)
            for _body, _r, tag in seen[acked:]:  # whatever comes is acked: credit for more
                held_ch.basic_ack(tag)
            acked = len(seen)
            return any(body == b"after" for body, _r, _t in seen)

        poll(came, "a new message for the carried-on consumer", timeout=FAILOVER)
        again = [(body, redelivered) for body, redelivered, _t in seen[1:] if body != b"after"]
        assert all(redelivered for _, redelivered in again), \
            f"delivered again without redelivered=true: {again}"
    finally:
        feed_conn.close()
        held.close()


def test_a_resumed_node_drops_what_its_stale_link_carried(nodes: dict[str, BrokerProcess]) -> None:
    """The other shape of the same symptom: a consumer on another node than the leader,
    whose deliveries are relayed. The leader relays committed messages to it while its
    node is paused, then gives up on the silent link and gives them to a consumer
    elsewhere, flagged; the resumed node must not hand the relayed copies, still in its
    socket, to its client as first deliveries. (Its node is not a member here: a paused
    member holds the commits, so nothing would be relayed to it meanwhile.)"""
    queue = "qd-relayed"
    conn = connect(nodes["n1"])
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={
            "x-queue-type": "quorum", "x-queue-leader-locator": "client-local",
            "x-quorum-initial-group-size": 2})
    finally:
        conn.close()
    found = poll(lambda: all((d := described(n, queue)) is not None
                             and len(d.get("online", ())) == 2 for n in nodes.values())
                 and described(nodes["n1"], queue), "two members online everywhere")
    leader, members = found["leader"], found["members"]
    other = next(n for n in members if n != leader)
    paused = next(n for n in NAMES if n not in members)
    held = connect(nodes[paused])  # its deliveries are relayed from the leader
    held_ch = held.channel()
    held_ch.basic_qos(prefetch_count=10)
    seen: list[tuple[bytes, bool, int]] = []
    held_ch.basic_consume(queue, lambda _c, m, _p, b: seen.append((b, m.redelivered,
                                                                   m.delivery_tag)))
    held.process_data_events(time_limit=0.5)  # subscribed at the leader, with credit
    feed_conn = connect(nodes[other])
    feed = feed_conn.channel()
    feed.confirm_delivery()
    try:
        os.kill(nodes[paused].pid, signal.SIGSTOP)
        try:
            for i in range(3):  # relayed to the paused node: they wait in its socket
                feed.basic_publish("", queue, str(i).encode())
            # the leader gives up on the silent link: back to the queue, flagged, and
            # to a consumer on the third node, which acks them
            got = drain(nodes[other], queue, 3)
            assert sorted(n for n, _ in got) == [0, 1, 2]
            assert all(redelivered for _, redelivered in got), got
        finally:
            os.kill(nodes[paused].pid, signal.SIGCONT)
        feed.basic_publish("", queue, b"after")
        acked = 0

        def came() -> bool:
            nonlocal acked
            held.process_data_events(time_limit=0.05)
            for _body, _r, tag in seen[acked:]:
                held_ch.basic_ack(tag)
            acked = len(seen)
            return any(body == b"after" for body, _r, _t in seen)

        poll(came, "a new message for the consumer on the resumed node", timeout=FAILOVER)
        again = [(body, redelivered) for body, redelivered, _t in seen if body != b"after"]
        assert all(redelivered for _, redelivered in again), \
            f"delivered again without redelivered=true: {again}"
    finally:
        feed_conn.close()
        held.close()
