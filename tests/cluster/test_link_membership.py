"""The link follows membership in etcd: nodes that join are linked with the secret etcd
keeps, a node that leaves is unlinked, and one restarted on another port is found again."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.cluster.link import ClusterLink, PeerDown
from smartbroker.cluster.link_setup import start_link
from smartbroker.cluster.membership import Membership, record_for


async def node(etcd: EtcdProcess, cluster: str, name: str, data: Path
               ) -> tuple[EtcdClient, Membership, ClusterLink]:
    data.mkdir(exist_ok=True)
    client = EtcdClient(etcd.endpoint, cluster)
    await client.connect()
    membership = Membership(client, record_for(name, "127.0.0.1", {}, data), ttl=5)
    link = await start_link(name, cluster, "127.0.0.1", 0, None, client, membership)
    link.on_call("name", lambda peer, payload: name.encode())
    membership.record = dataclasses.replace(membership.record, cluster_port=link.port)
    await membership.start()
    return client, membership, link


async def leave(client: EtcdClient, membership: Membership, link: ClusterLink) -> None:
    await membership.stop()
    await link.close()
    await client.close()


def test_members_are_linked_and_unlinked_as_they_come_and_go(
        etcd: EtcdProcess, cluster_name: str, tmp_path: Path) -> None:
    async def main() -> None:
        one = await node(etcd, cluster_name, "n1", tmp_path / "n1")
        two = await node(etcd, cluster_name, "n2", tmp_path / "n2")
        await one[2].wait_connected("n2", timeout=10)
        assert await one[2].call("n2", "name") == b"n2"
        await two[2].wait_connected("n1", timeout=10)
        assert await two[2].call("n1", "name") == b"n1"
        down = asyncio.Event()
        one[2].on_peer_down(lambda peer: down.set())
        await leave(*two)
        await down.wait()
        with pytest.raises(PeerDown):
            await one[2].call("n2", "name")
        two = await node(etcd, cluster_name, "n2", tmp_path / "n2")  # another free port
        await one[2].wait_connected("n2", timeout=10)
        assert await one[2].call("n2", "name") == b"n2"
        await leave(*two)
        await leave(*one)

    asyncio.run(asyncio.wait_for(main(), 60))
