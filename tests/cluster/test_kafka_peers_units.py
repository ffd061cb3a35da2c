"""``cluster/kafka_peers.KafkaPeers`` without a network: membership, placements and the
broker's streams are plain objects, the ``kafka/`` prefix a dict (the real watched view is
tested by the three-node tests of test_kafka_cluster.py)."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

from smartbroker.cluster.definitions_keys import seg
from smartbroker.cluster.etcd_client import Delete, Put
from smartbroker.cluster.kafka_peers import KafkaPeers, broker_id, cluster_id
from smartbroker.cluster.placement import Placement, PlacementTable


class View:
    """The part of ``WatchedPrefix`` KafkaPeers uses, over a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[Any] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def view(self, under: bytes = b"") -> dict[bytes, bytes]:
        return {k: v for k, v in self.data.items() if k.startswith(under)}

    def write(self, *ops: Any) -> None:
        for op in ops:
            self.writes.append(op)
            if isinstance(op, Put):
                self.data[op.key] = op.value
            else:
                self.data.pop(op.key, None)


def record(name: str, kafka_port: int) -> Any:
    return SimpleNamespace(name=name, host="10.0.0." + name[-1], kafka_port=kafka_port)


def stream(partitions: int = 1) -> Any:
    return SimpleNamespace(capabilities=SimpleNamespace(offset_log=True),
                           meta=SimpleNamespace(topic_id=uuid.uuid4()),
                           partitions=list(range(partitions)))


def peers() -> tuple[KafkaPeers, View, dict[str, Any]]:
    placement = PlacementTable("n1")
    membership = SimpleNamespace(record=record("n1", 9092),
                                 up={"n2": record("n2", 9093), "n3": record("n3", 0)})
    node = SimpleNamespace(name="n1", cluster_name="c", membership=membership, etcd=None,
                           forwarding=SimpleNamespace(placement=placement))
    queues: dict[str, Any] = {}
    broker = SimpleNamespace(vhosts={"/": SimpleNamespace(queues=queues)})
    p = KafkaPeers(node, broker, "/")
    view = View()
    p.view = view  # type: ignore[assignment]
    return p, view, queues


def topic_key(name: str) -> bytes:
    return b"kafka/topics/" + seg("/") + b"/" + seg(name)


def test_broker_ids_are_stable_and_brokers_are_the_up_nodes_with_kafka() -> None:
    assert broker_id("n1") == broker_id("n1") != broker_id("n2")
    assert 0 <= broker_id("rabbit@some-host") < 2**31
    assert cluster_id("c") == cluster_id("c") != cluster_id("d")
    p, _, _ = peers()
    assert p.brokers() == [(broker_id("n1"), "10.0.0.1", 9092), (broker_id("n2"), "10.0.0.2", 9093)]


def test_the_leader_describes_its_streams_when_they_change() -> None:
    p, view, queues = peers()
    queues["mine"] = stream()
    queues["theirs"] = stream()
    queues["classic"] = SimpleNamespace(capabilities=SimpleNamespace(offset_log=False))
    p.placement.queues[("/", "mine")] = Placement("n1")
    p.placement.queues[("/", "theirs")] = Placement("n2")
    p.scan()
    described = json.loads(view.data[topic_key("mine")])
    assert described == {"leader": "n1", "id": str(queues["mine"].meta.topic_id), "partitions": 1}
    assert topic_key("theirs") not in view.data and len(view.writes) == 1
    p.scan()
    assert len(view.writes) == 1  # unchanged: nothing written
    queues["mine"].partitions.append(1)  # CreatePartitions on the leader
    p.scan()
    assert json.loads(view.data[topic_key("mine")])["partitions"] == 2
    del queues["mine"]
    p.scan()
    assert isinstance(view.writes[-1], Delete) and topic_key("mine") not in view.data


def test_a_stream_led_elsewhere_is_listed_with_its_leader_while_it_is_up() -> None:
    p, view, _ = peers()
    tid = uuid.uuid4()
    view.data[topic_key("t")] = json.dumps({"leader": "n2", "id": str(tid),
                                            "partitions": 3}).encode()
    assert p.remote_topic("t") is None  # no placement yet
    p.placement.queues[("/", "t")] = Placement("n2")
    assert p.led_elsewhere("t")
    found = p.remote_topic("t")
    assert found is not None and (found.leader, found.partitions, found.topic_id) == (
        broker_id("n2"), 3, tid)
    assert [t.name for t in p.remote_topics()] == ["t"]
    p.placement.queues[("/", "t")] = Placement("n3")  # moved: the description is stale
    assert p.remote_topic("t") is None
    p.placement.queues[("/", "t")] = Placement("n2")
    del p.membership.up["n2"]  # its node is down
    assert p.remote_topic("t") is None and p.remote_topics() == []
    view.data[topic_key("bad")] = b"not json"
    p.placement.queues[("/", "bad")] = Placement("n2")
    assert p.remote_topic("bad") is None


def test_a_group_is_coordinated_by_the_leader_of_its_topics() -> None:
    p, view, _ = peers()
    p.placement.queues[("/", "orders")] = Placement("n2")
    p.placement.queues[("/", "local")] = Placement("n1")
    assert p.coordinator("g") is None and not p.coordinated_elsewhere("g", [])
    assert p.coordinated_elsewhere("g", ["orders"])  # recorded: n2
    assert p.coordinator("g") == (broker_id("n2"), "10.0.0.2", 9093)
    assert p.coordinated_elsewhere("g", [])  # a JoinGroup naming nothing goes there too
    assert not p.coordinated_elsewhere("h", ["local"])  # here, and recorded so
    assert view.data[b"kafka/groups/" + seg("/") + b"/" + seg("h")] == b"n1"
    assert not p.coordinated_elsewhere("h", ["orders"])  # kept here: offsets refused there
    del p.membership.up["n2"]  # the recorded node is down: coordinated where it asks
    assert p.coordinator("g") is None and not p.coordinated_elsewhere("g", [])
