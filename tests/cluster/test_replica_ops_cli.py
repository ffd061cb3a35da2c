"""``smartbroker queues grow|shrink|add-member|delete-member``, ``cluster rebalance`` and
``cluster status``'s replica counts against a real etcd holding replica records as the
nodes write them (no broker: what the commands write, what they refuse in one line, and
the rebalance plan). The nodes' side (catching up, handing over) is
test_replica_ops.py's, on three real nodes; here a leader's hand-over is played by a
thread that does what a leader does with a transfer key."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.cli.replica_state import ISR, LEADER, TRANSFER, Replicas, log_id, rebalance_moves
from smartbroker.cluster import definitions_keys as dk
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.membership import KNOWN, NODES
from smartbroker.cluster.placement import key as placement_key
from tests.cluster.test_cluster_cli import record, smartbroker

QUEUES = {  # name: (type, members, isr, leader); members None = no replica set
    "q1": ("quorum", ["a", "b"], ["a", "b"], "a"),
    "q2": ("quorum", ["b", "a", "c"], ["b", "a"], "b"),
    "solo": ("quorum", ["a"], ["a"], "a"),
    "single": ("quorum", None, None, "a"),
    "cl": ("classic", None, None, "a"),
    "behind": ("quorum", ["d", "c"], ["d"], None),  # its leader d is down, c lags
}


def _queue_def(name: str, kind: str) -> bytes:
    return json.dumps({"vhost": "/", "name": name, "durable": True, "auto_delete": False,
                       "arguments": {"x-queue-type": kind}, "type": kind}).encode()


async def _write(endpoint: str, cluster: str) -> None:
    async with EtcdClient(endpoint, cluster) as etcd:
        lease = await etcd.grant_lease(60)
        for i, node in enumerate("abcd"):
            await etcd.put(KNOWN + node, record(node, 1000 * (i + 1)))
            if node != "d":  # d is known but down
                await etcd.put(NODES + node, record(node, 1000 * (i + 1)), lease)
        for name, (kind, members, isr, leader) in QUEUES.items():
            await etcd.put(dk.key("queues", "/", name), _queue_def(name, kind))
            placement: dict[str, Any] = {"leader": leader or members[0]}
            if members is not None:
                placement["members"] = members
                await etcd.put(ISR + log_id("/", name), json.dumps(
                    {"members": members, "isr": isr, "epoch": 7}).encode())
                if leader is not None:
                    await etcd.put(LEADER + log_id("/", name),
                                   json.dumps({"node": leader}).encode(), lease)
            await etcd.put(placement_key("/", name), json.dumps(placement).encode())


async def _read(endpoint: str, cluster: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ISR record, the placement) of queue ``name``."""
    async with EtcdClient(endpoint, cluster) as etcd:
        isr = await etcd.get(ISR + log_id("/", name))
        placement = await etcd.get(placement_key("/", name))
        assert isr is not None and placement is not None
        return json.loads(isr.value), json.loads(placement.value)


@pytest.fixture
def cli(etcd: Any, cluster_name: str) -> Iterator[Any]:
    """The CLI bound to a cluster whose records ``QUEUES`` describes."""
    asyncio.run(_write(etcd.endpoint, cluster_name))

    def run(*args: str) -> Any:
        return smartbroker(*args, "--etcd", etcd.endpoint, "--cluster-name", cluster_name)

    run.read = lambda name: asyncio.run(_read(etcd.endpoint, cluster_name, name))  # type: ignore[attr-defined]
    yield run


def one_line_error(done: Any, text: str) -> None:
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error: ") and text in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_add_and_delete_member(cli: Any) -> None:
    done = cli("queues", "add-member", "/", "q1", "c")
    assert done.returncode == 0 and "node c added" in done.stdout, done.stderr
    isr, placement = cli.read("q1")
    # the new member is not in sync until its leader says so; the epoch is the leader's
    assert isr == {"members": ["a", "b", "c"], "isr": ["a", "b"], "epoch": 7}
    assert placement == {"leader": "a", "members": ["a", "b", "c"]}
    again = cli("queues", "add-member", "/", "q1", "c")
    assert again.returncode == 0 and "already a member" in again.stdout

    done = cli("queues", "delete-member", "/", "q1", "b")
    assert done.returncode == 0 and "node b removed" in done.stdout, done.stderr
    isr, placement = cli.read("q1")
    assert isr == {"members": ["a", "c"], "isr": ["a"], "epoch": 7}
    assert placement["members"] == ["a", "c"]
    absent = cli("queues", "delete-member", "/", "q1", "b")
    assert absent.returncode == 0 and "not a member" in absent.stdout


@pytest.mark.parametrize("args, text", [
    (("add-member", "/", "q1", "x"), "no node 'x' in the cluster"),
    (("add-member", "/", "q1", "d"), "node 'd' is not running"),
    (("add-member", "/", "nope", "c"), "queue 'nope' not found in vhost '/'"),
    (("add-member", "other", "q1", "c"), "queue 'q1' not found in vhost 'other'"),
    (("add-member", "/", "cl", "c"), "queue 'cl' in vhost '/' is a classic queue, not a quorum"),
    (("add-member", "/", "single", "c"), "has no replica set"),
    (("delete-member", "/", "solo", "a"), "the last member cannot be removed"),
    (("delete-member", "/", "q1", "x"), "no node 'x' in the cluster"),
    (("delete-member", "/", "behind", "d"), "no other member is in sync (in sync: d)"),
    (("grow", "d"), "node 'd' is not running"),
    (("grow", "c", "some"), "selection must be 'all' or 'even'"),
    (("grow", "c", "--queue-pattern", "("), "bad --queue-pattern '('"),
    (("shrink", "x"), "no node 'x' in the cluster"),
])
def test_refusals_are_one_line(cli: Any, args: tuple[str, ...], text: str) -> None:
    one_line_error(cli("queues", *args), text)


def test_grow_even_and_all(cli: Any) -> None:
    even = cli("queues", "grow", "c", "even", "--json")
    assert even.returncode == 0, even.stderr
    assert json.loads(even.stdout) == [{"vhost": "/", "name": "q1", "size": 3, "result": "ok"}]
    grown = cli("queues", "grow", "c", "all", "--queue-pattern", "^so")
    assert grown.returncode == 0 and "solo" in grown.stdout and "q1" not in grown.stdout
    assert cli.read("solo")[0]["members"] == ["a", "c"]


class StandInLeader(threading.Thread):
    """What a leader does with ``replica/transfer/<log>``: hand its leader key to the
    node named (the real one first waits until that node has everything)."""

    def __init__(self, endpoint: str, cluster: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.cluster = endpoint, cluster
        self.ready = threading.Event()
        self.moved: list[tuple[str, str]] = []

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        async with EtcdClient(self.endpoint, self.cluster) as etcd:
            _, revision = await etcd.range(TRANSFER)
            self.ready.set()
            async for event in etcd.watch(TRANSFER, start_revision=revision + 1):
                if event.kind == "put":
                    log = event.key[len(TRANSFER):].decode()
                    to = json.loads(event.value)["to"]
                    await etcd.put(LEADER + log, json.dumps({"node": to}).encode())
                    self.moved.append((log, to))
                    if log == log_id("/", "q2"):
                        return


def test_shrink_hands_a_leadership_over_first(etcd: Any, cluster_name: str, cli: Any) -> None:
    leader = StandInLeader(etcd.endpoint, cluster_name)
    leader.start()
    assert leader.ready.wait(10)
    done = cli("queues", "shrink", "b", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted((r["name"], r["size"], r["result"]) for r in json.loads(done.stdout)) == [
        ("q1", 1, "ok"), ("q2", 2, "ok")]
    leader.join(10)
    # q2's leader was b: its leadership went to the next member in sync, then b went
    assert leader.moved == [(log_id("/", "q2"), "a")]
    assert cli.read("q2")[0] == {"members": ["a", "c"], "isr": ["a"], "epoch": 7}
    assert cli.read("q1")[1]["members"] == ["a"]


def test_a_leader_that_does_not_hand_over(etcd: Any, cluster_name: str, cli: Any) -> None:
    done = cli("queues", "delete-member", "/", "q2", "b", "--timeout", "0.5")
    one_line_error(done, "the leadership did not move from 'b' to 'a' within 0.5 s")
    assert cli.read("q2")[0]["members"] == ["b", "a", "c"]  # nothing changed

    async def transfer_keys() -> list[Any]:
        async with EtcdClient(etcd.endpoint, cluster_name) as client:
            return (await client.range(TRANSFER))[0]
    assert asyncio.run(transfer_keys()) == []  # the command's lease took its key along


def test_status_counts_followers_and_members_out_of_sync(cli: Any) -> None:
    done = cli("cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    nodes = {n["name"]: n for n in shown["nodes"]}
    # q1 a+b, q2 b+a+c (c out of sync), solo a, behind d+c without a leader (c behind)
    assert {n: (v["followers"], v["out_of_sync"]) for n, v in nodes.items()} == {
        "a": (1, 0), "b": (1, 0), "c": (1, 2), "d": (0, 0)}
    assert sorted((b["queue"], b["out_of_sync"]) for b in shown["out_of_sync"]) == [
        ("behind", ["c"]), ("q2", ["c"])]
    table = cli("cluster", "status")
    assert "out of sync: queue 'q2' in vhost '/': c (leader b)" in table.stdout


def _log(name: str, leader: str, isr: list[str]) -> Replicas:
    return Replicas("/", name, None, {"members": isr, "isr": isr}, 1, leader)


def test_rebalance_plan() -> None:
    everywhere = [_log(f"q{i}", "a", ["a", "b", "c"]) for i in range(7)]
    moves = rebalance_moves(everywhere, {"a", "b", "c"})
    after = {"a": 7, "b": 0, "c": 0}
    for r, to in moves:
        after[r.leader or ""] -= 1
        after[to] += 1
    assert sorted(after.values()) == [2, 2, 3]
    # only members in sync and running may lead; a down node's logs are not counted
    assert rebalance_moves([_log("x", "a", ["a"]), _log("y", "a", ["a"])], {"a", "b"}) == []
    assert rebalance_moves([_log("x", "a", ["a", "b"]), _log("y", "a", ["a", "b"])],
                           {"a"}) == []
    assert rebalance_moves([_log("x", "d", ["d", "b"])] * 3, {"a", "b"}) == []


def test_forget_takes_the_node_out_of_the_replica_sets(etcd: Any, cluster_name: str,
                                                        cli: Any) -> None:
    """As RabbitMQ's forget_cluster_node shrinks the quorum queues: d (down) leaves every
    replica set it is in; the queues it led (no member took over) go with their records."""
    async def setup() -> None:
        async with EtcdClient(etcd.endpoint, cluster_name) as client:
            await client.put(ISR + log_id("/", "q1"), json.dumps(
                {"members": ["a", "b", "d"], "isr": ["a", "b", "d"], "epoch": 7}).encode())
            await client.put(placement_key("/", "q1"), json.dumps(
                {"leader": "a", "members": ["a", "b", "d"]}).encode())
            await client.put(dk.key("queues", "/", "dq"), _queue_def("dq", "quorum"))
            await client.put(placement_key("/", "dq"), json.dumps(
                {"leader": "d", "members": ["d", "c"]}).encode())
            await client.put(ISR + log_id("/", "dq"), json.dumps(
                {"members": ["d", "c"], "isr": ["d"], "epoch": 3}).encode())
    asyncio.run(setup())
    done = cli("cluster", "forget", "d")
    assert done.returncode == 0 and "with the 2 queue(s) it led" in done.stdout, done.stderr
    assert cli.read("q1") == ({"members": ["a", "b"], "isr": ["a", "b"], "epoch": 7},
                              {"leader": "a", "members": ["a", "b"]})

    async def gone() -> list[Any]:
        async with EtcdClient(etcd.endpoint, cluster_name) as client:
            return [await client.get(k) for k in (ISR + log_id("/", "dq"),
                                                  placement_key("/", "dq"))]
    assert asyncio.run(gone()) == [None, None]
