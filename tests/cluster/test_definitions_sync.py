"""Two brokers in one process, each on its own EtcdDefinitionStore over one etcd: what one
declares through the broker reaches the other's running broker (DefinitionsSync), in
dependency order, and applying it writes nothing back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.broker.persistence import Persistence
from smartbroker.broker.policies import Policy
from smartbroker.cluster.definitions_etcd import EtcdDefinitionStore
from smartbroker.cluster.definitions_sync import DefinitionsSync
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.config import Config
from smartbroker.errors import AMQPError

Node = tuple[Broker, EtcdDefinitionStore, DefinitionsSync]


async def until(cond: Callable[[], bool], sync: DefinitionsSync, what: str) -> None:
    """Wait for ``cond`` pass by pass of the sync (each applied batch sets ``changed``)."""
    async def wait() -> None:
        while not cond():
            sync.changed.clear()
            await sync.changed.wait()
    try:
        await asyncio.wait_for(wait(), 10)
    except TimeoutError:
        raise AssertionError(f"not within 10 s: {what}") from None


def run_two(etcd: EtcdProcess, name: str, tmp: Path,
            body: Callable[[Node, Node], Awaitable[None]]) -> None:
    async def main() -> None:
        nodes: list[Node] = []
        persistences = []
        for i in range(2):
            store = await EtcdDefinitionStore(EtcdClient(etcd.endpoint, name)).open()
            persistence = Persistence(tmp / f"n{i}", "never", definitions=store)
            broker = Broker(Config(data_dir=tmp / f"n{i}"), persistence)
            nodes.append((broker, store, DefinitionsSync(broker, store)))
            persistences.append(persistence)
            await store.flush()  # the defaults of the first start, in etcd
        try:
            await body(nodes[0], nodes[1])
        finally:
            for (broker, store, _), persistence in zip(nodes, persistences, strict=True):
                await store.aclose()
                await persistence.aclose(broker)
                await store.client.close()
    asyncio.run(main())


def test_declares_on_one_broker_reach_the_other(etcd: EtcdProcess, cluster_name: str,
                                                tmp_path: Path) -> None:
    async def body(a: Node, b: Node) -> None:
        broker_a, store_a, _ = a
        broker_b, store_b, sync_b = b
        vhost = broker_a.vhosts["/"]
        vhost.set_policy(Policy("cap", "^q$", {"max-length": 3}, apply_to="queues"))
        vhost.declare_exchange("ex", "topic", durable=True)
        q, _ = vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 500})
        vhost.bind("ex", q, "k.#", {"x": b"\x00"})  # likely one transaction with the queue
        broker_a.users.add("carol", "pw", ["monitoring"])
        broker_a.permissions.set(Permission("carol", "/", "^c", "^w", "^r"))
        vhost.declare_queue("transient", durable=False)  # in etcd too (on the node's lease)
        vhost.declare_queue("mine", exclusive=True, owner=object())  # locked on b (405)
        await store_a.flush()
        there = broker_b.vhosts["/"]

        def arrived() -> bool:
            qb = there.queues.get("q")
            return (qb is not None and "ex" in there.exchanges and bool(qb.bindings)
                    and broker_b.permissions.get("/", "carol") is not None)
        await until(arrived, sync_b, "the queue, its binding, carol's permission on b")
        qb = there.queues["q"]
        assert qb.arguments == {"x-message-ttl": 500} and qb.policy_name == "cap"
        assert [(x.source.name, x.routing_key, x.arguments) for x in qb.bindings] == [
            ("ex", "k.#", {"x": b"\x00"})]
        assert broker_b.users.users["carol"].password_hash == \
            broker_a.users.users["carol"].password_hash
        assert broker_b.users.users["carol"].scram  # the SCRAM credentials came too
        await until(lambda: "transient" in there.queues, sync_b, "the transient queue on b")
        assert there.queues["transient"].durable is False
        await until(lambda: "mine" in there.queues, sync_b, "the exclusive queue on b")
        with pytest.raises(AMQPError) as locked:  # its owner is no connection of b
            there.queue("mine", object())
        assert locked.value.code == 405
        assert store_b.pending() is None  # applying wrote nothing back

        vhost.delete_exchange("ex")  # its binding goes with it, on both
        broker_a.users.delete("carol")
        await store_a.flush()
        await until(lambda: "ex" not in there.exchanges and "carol" not in broker_b.users.users,
                    sync_b, "the exchange and carol gone from b")
        assert not there.queues["q"].bindings
        assert broker_b.permissions.get("/", "carol") is None
        assert store_b.pending() is None
    run_two(etcd, cluster_name, tmp_path, body)


def test_a_vhost_deleted_on_one_broker_goes_on_the_other(etcd: EtcdProcess, cluster_name: str,
                                                         tmp_path: Path) -> None:
    async def body(a: Node, b: Node) -> None:
        broker_a, store_a, _ = a
        broker_b, _, sync_b = b
        broker_a.add_vhost("v/1")
        broker_a.vhosts["v/1"].declare_queue("q", durable=True)
        await store_a.flush()
        await until(lambda: "q" in getattr(broker_b.vhosts.get("v/1"), "queues", {}), sync_b,
                    "vhost v/1 and its queue on b")
        broker_a.delete_vhost("v/1")
        await store_a.flush()
        await until(lambda: "v/1" not in broker_b.vhosts, sync_b, "v/1 gone from b")
    run_two(etcd, cluster_name, tmp_path, body)
