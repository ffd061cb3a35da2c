"""A replicated quorum queue's enqueues held until committed survive a leadership move
(issue 16, queues/quorum_hold.py, cluster/quorum_commits.py): three real nodes, a real
etcd, pika and aiormq clients.

Leadership moved (``queues delete-member`` of the leader n1: a transfer to n2) while a
publisher on n2 pipelines confirms and a consumer on n3 acks, relayed from n1, then from
n2 (its subscription moves: ``remote_consumer.Subscriptions.resubscribe``): the old
leader's object drops its held tail, the new one rebuilds it from its copy and releases
it once committed: every confirmed message arrives, in order, and any second delivery
is flagged. Without the hold, 7 runs in 8 failed: first deliveries out of publishing
order. With a small prefetch the consumer is out of credit most of the time, so the
acks of the old leader's deliveries give credit back while its new subscription is on
its way to n2: that credit once went out before n2 knew the subscription, was dropped
there, and the consumer got nothing more (n2: messages ready, 1 consumer, 0 unacked).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import member_nodes, poll
from tests.cluster.quorum_clients import PipelinedPublisher, connect
from tests.cluster.test_cluster_cli import smartbroker
from tests.cluster.test_quorum_commit_delivery import in_sync

NAMES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("quorum-moved"), etcd.endpoint, NAMES) as procs:
        yield procs


def described(node: BrokerProcess, queue: str) -> Any:
    """The queue's counts, leader and consumers as ``node``'s API shows them."""
    try:
        page = node.get_json(f"/api/queues/%2F/{queue}")
    except Exception as exc:  # noqa: BLE001 - reported as found
        return repr(exc)
    return {k: page.get(k) for k in ("leader", "members", "messages_ready",
                                     "messages_unacknowledged", "consumers")}


def test_held_messages_survive_a_leadership_transfer(nodes: dict[str, BrokerProcess]) -> None:
    moved_under_a_relayed_consumer(nodes, "qc-moved", prefetch=50)


def test_a_relayed_consumer_with_a_small_prefetch_carries_on(
        nodes: dict[str, BrokerProcess]) -> None:
    moved_under_a_relayed_consumer(nodes, "qc-moved-p10", prefetch=10)


def moved_under_a_relayed_consumer(nodes: dict[str, BrokerProcess], queue: str,
                                   prefetch: int) -> None:
    """The leader n1 hands ``queue`` to n2 under a publisher on n2 and a consumer on n3."""
    with contextlib.closing(connect(nodes["n1"])) as conn:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    poll(lambda: set(in_sync(nodes["n1"], queue)) == set(NAMES), "all three in sync")
    got: list[tuple[int, bool]] = []
    consumer = connect(nodes["n3"])  # relayed from n1, then from the new leader n2
    ch = consumer.channel()
    ch.basic_qos(prefetch_count=prefetch)

    def on_message(c: Any, method: Any, _p: Any, body: bytes) -> None:
        got.append((int(body), method.redelivered))
        c.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_message)
    publisher = PipelinedPublisher(nodes["n2"], queue)
    publisher.start()
    moved: list[Any] = []
    try:
        poll(lambda: consumer.process_data_events(0.05) or len(publisher.confirmed) >= 300,
             "confirms before the move")
        node = nodes["n1"]
        mover = threading.Thread(target=lambda: moved.append(smartbroker(
            "queues", "delete-member", "/", queue, "n1", "--etcd", node.etcd,
            "--cluster-name", node.cluster_name)))
        mover.start()
        poll(lambda: consumer.process_data_events(0.05) or not mover.is_alive(),
             "the leader moved", timeout=30)
        assert moved[0].returncode == 0, moved[0].stdout + moved[0].stderr
        after = len(publisher.confirmed)
        poll(lambda: consumer.process_data_events(0.05) or len(publisher.confirmed) >= after + 300,
             "confirms through the new leader", timeout=30)
        publisher.stop.set()
        publisher.join(15)
        assert publisher.error is None, publisher.error
        confirmed = set(publisher.confirmed)
        try:
            poll(lambda: consumer.process_data_events(0.05)
                 or confirmed <= {n for n, _r in got}, "every confirmed message delivered",
                 timeout=30)
        except AssertionError:
            missing = sorted(confirmed - {n for n, _r in got})
            pages = {n: described(p, queue) for n, p in nodes.items()}
            with contextlib.closing(connect(nodes["n2"])) as probe:  # ready, or held?
                pages["get"] = probe.channel().basic_get(queue, auto_ack=True)[2]
            raise AssertionError(f"{len(missing)} confirmed not delivered (first "
                                 f"{missing[:5]}, {len(got)} got, last {got[-3:]}); "
                                 f"{pages}") from None
    finally:
        publisher.stop.set()
        consumer.close()
    first: dict[int, int] = {}
    for i, (n, redelivered) in enumerate(got):
        assert n not in first or redelivered, f"{n} delivered again without redelivered"
        first.setdefault(n, i)
    positions = [first[n] for n in sorted(confirmed)]
    assert positions == sorted(positions), "confirmed messages out of publishing order"
