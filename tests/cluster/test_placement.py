"""Placement: RabbitMQ's leader locators, stream partitions spread over the nodes, the
placement record in etcd, and ``x-queue-leader-locator`` checked on a single node too."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pika
import pika.exceptions
import pytest

from smartbroker.broker.policies import PolicyError, validate_definition
from smartbroker.cluster.placement import (
    BALANCED,
    CLIENT_LOCAL,
    Placement,
    PlacementTable,
    choose,
    key,
    locator,
    parse_key,
    spread,
)

UP = ["n1", "n2", "n3"]


def test_locator_policy_wins_and_deprecated_values_mean_balanced() -> None:
    assert locator({}) == CLIENT_LOCAL
    assert locator({"x-queue-leader-locator": "balanced"}) == BALANCED
    assert locator({"x-queue-leader-locator": b"min-masters"}) == BALANCED
    assert locator({"x-queue-leader-locator": "balanced"},
                   {"queue-leader-locator": "client-local"}) == CLIENT_LOCAL


@pytest.mark.parametrize(("where", "durable", "exclusive", "expected"), [
    (CLIENT_LOCAL, True, False, "n2"),
    (BALANCED, True, False, "n3"),  # fewest leaders
    (BALANCED, False, False, "n2"),  # non-durable: on the declaring node
    (BALANCED, True, True, "n2"),  # exclusive: on the declaring node
])
def test_choose(where: str, durable: bool, exclusive: bool, expected: str) -> None:
    leaders = {"n1": 4, "n2": 3, "n3": 1}
    assert choose(where, "n2", UP, leaders, durable=durable, exclusive=exclusive) == expected


def test_balanced_tie_prefers_the_declaring_node() -> None:
    assert choose(BALANCED, "n2", UP, {}) == "n2"
    assert choose(BALANCED, "n9", UP, {}) == "n1"  # declarer not up: by name


def test_stream_partitions_spread_round_robin_from_the_chosen_node() -> None:
    assert spread(5, "n2", UP) == ["n2", "n3", "n1", "n2", "n3"]
    assert spread(2, "n1", ["n1"]) == ["n1", "n1"]


def test_keys_are_safe_for_any_name() -> None:
    for vhost, queue in [("/", "a/b"), ("v h", "%2F"), ("é", "q\x00\xff")]:
        assert parse_key(key(vhost, queue)) == (vhost, queue)
    assert key("/", "a/b").count("/") == 2
    assert parse_key("nodes/n1") is None


def test_placement_values_round_trip_and_garbage_is_ignored() -> None:
    table = PlacementTable("n1")
    table.apply(key("/", "s"), Placement("n2", ("n2", "n3")).encode())
    table.apply(key("/", "q"), Placement("n1").encode())
    assert table.get("/", "s") == Placement("n2", ("n2", "n3"))
    assert table.counts() == {"n1": 1, "n2": 1, "n3": 1}
    for garbage in (b"", b"[]", b'{"leader": 3}', b'{"x": 1}', b"\xff"):
        table.apply(key("/", "q"), garbage)
        assert table.leader("/", "q") is None
    table.apply(key("/", "s"), None)
    assert table.get("/", "s") is None


def test_propose_balanced_and_partitioned() -> None:
    table = PlacementTable("n1")
    table.load([(key("/", f"q{i}"), Placement("n1").encode()) for i in range(3)])
    balanced = {"x-queue-leader-locator": "balanced"}
    assert table.propose("/", "a", balanced, None, UP, durable=True, exclusive=False) == \
        Placement("n2")
    stream = table.propose("/", "s", {}, None, UP, durable=True, exclusive=False, partitions=4)
    assert stream == Placement("n1", ("n1", "n2", "n3", "n1"))


class FakeKV:
    """Stands in for etcd's create-if-absent (the real one: tests on etcd below)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def create_if_absent(self, k: str, value: bytes) -> tuple[bool, SimpleNamespace]:
        created = k not in self.data
        self.data.setdefault(k, value)
        return created, SimpleNamespace(value=self.data[k])

    async def delete(self, k: str) -> None:
        self.data.pop(k, None)


def test_first_declarer_wins() -> None:
    kv = FakeKV()
    one, two = PlacementTable("n1", kv), PlacementTable("n2", kv)

    async def race() -> tuple[Placement, Placement]:
        first = await one.record("/", "q", Placement("n1"))
        second = await two.record("/", "q", Placement("n2"))
        return first, second

    assert asyncio.run(race()) == (Placement("n1"), Placement("n1"))
    assert two.leader("/", "q") == "n1"
    asyncio.run(two.forget("/", "q"))
    assert kv.data == {}


def test_policy_key_is_validated() -> None:
    validate_definition({"queue-leader-locator": "balanced"})
    with pytest.raises(PolicyError, match="not a valid queue leader locator"):
        validate_definition({"queue-leader-locator": "nearest"})


# -- on a single node, over a real connection ---------------------------------------------------

def _declare(url: str, name: str, **kwargs: object) -> int | None:
    """Declare; returns the channel-close reply code, or None when it was declared."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(name, **kwargs)  # type: ignore[arg-type]
        except pika.exceptions.ChannelClosedByBroker as exc:
            return exc.reply_code if "x-queue-leader-locator" in exc.reply_text else -1
        ch.queue_delete(name)
        return None
    finally:
        conn.close()


def test_single_node_accepts_and_checks_the_locator(broker_url: str, qname: str) -> None:
    for value in ("client-local", "balanced", "random"):
        assert _declare(broker_url, qname, arguments={"x-queue-leader-locator": value}) is None
    assert _declare(broker_url, qname, durable=True, arguments={
        "x-queue-type": "stream", "x-queue-leader-locator": "balanced"}) is None
    assert _declare(broker_url, qname, arguments={"x-queue-leader-locator": "nearest"}) == 406
    assert _declare(broker_url, qname, arguments={"x-queue-leader-locator": 5}) == 406
    assert _declare(broker_url, qname, durable=True, arguments={
        "x-queue-type": "stream", "x-queue-leader-locator": "nearest"}) == 406
