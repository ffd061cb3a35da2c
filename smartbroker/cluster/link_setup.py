"""A node's cluster link, wired to its settings and its membership.

``start_link`` gets the cluster's secret (configured, else etcd's), listens on the cluster
port (0: a free one, then registered by membership with the port really bound) and
follows membership: a node that comes up is linked (the lower name dials), a node that goes
down is unlinked (its calls fail with ``PeerDown``, its peer-down callbacks run). Each
dial asks membership for the peer's current address, so a peer restarted on another port
is found again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.cluster.link import ClusterLink
from smartbroker.cluster.secret import cluster_secret, etcd_source

if TYPE_CHECKING:
    from smartbroker.cluster.etcd_client import EtcdClient
    from smartbroker.cluster.membership import Membership


async def start_link(node: str, cluster: str, host: str, port: int, configured_secret:
                     str | None, etcd: EtcdClient, membership: Membership) -> ClusterLink:
    """The started link of node ``node`` (``host``/``port``: where it listens)."""
    secret = await cluster_secret(configured_secret, etcd_source(etcd))

    def resolve(name: str) -> tuple[str, int] | None:
        record = membership.up.get(name)
        return None if record is None else (record.host, record.cluster_port)

    link = await ClusterLink(node, cluster, secret, host=host, port=port,
                             resolve=resolve).start()
    # (no deadline yet: this node has not joined, its peers hold nothing of it)
    link.lease_lapsed = lambda: 0 < membership.lease_deadline <= link.loop.time()
    follow(link, membership)
    return link


def follow(link: ClusterLink, membership: Membership) -> None:
    """Keep the link's peers equal to the nodes membership says are up (now and later)."""

    def changed(name: str, up: bool) -> None:
        record = membership.up.get(name)
        if up and record is not None and record.cluster_port:
            link.add_peer(name, record.host, record.cluster_port)
        elif not up:
            link.remove_peer(name)

    membership.listeners.append(changed)
    for name in list(membership.up):
        changed(name, True)
