"""The cluster secret: a configured one as is, else one created once in etcd, the same for
every node (even nodes starting at the same moment)."""

from __future__ import annotations

import asyncio

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.cluster.secret import KEY, cluster_secret, etcd_source


def test_a_configured_secret_is_used_without_asking_etcd() -> None:
    async def never(key: str, value: bytes) -> tuple[bool, bytes]:
        raise AssertionError("etcd asked")

    assert asyncio.run(cluster_secret("s3cret", never)) == b"s3cret"


def test_nodes_starting_together_get_one_secret_from_etcd(etcd: EtcdProcess,
                                                          cluster_name: str) -> None:
    async def main() -> None:
        clients = [EtcdClient(etcd.endpoint, cluster_name) for _ in range(3)]
        for client in clients:
            await client.connect()
        try:
            secrets = await asyncio.gather(*(cluster_secret(None, etcd_source(c))
                                             for c in clients))
            assert len(set(secrets)) == 1 and len(secrets[0]) >= 32
            stored = await clients[0].get(KEY)
            assert stored is not None and stored.value == secrets[0]
            later = await cluster_secret(None, etcd_source(clients[1]))
            assert later == secrets[0]  # a restarted node reads the same one
        finally:
            for client in clients:
                await client.close()

    asyncio.run(main())
