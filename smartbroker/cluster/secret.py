"""The cluster's secret: what every node proves it holds before a link is trusted.

Given (``--cluster-secret`` or SMARTBROKER_CLUSTER_SECRET), it is used as is, on every node
alike. Otherwise the first node to start creates a random one in etcd under ``secret``
with a create-if-absent transaction, and every later node reads that one: two nodes
starting at once still agree (one transaction wins, both read the winner's value). Whoever
can read the cluster's etcd prefix can join the cluster, as with RabbitMQ's Erlang cookie
on disk; a secret given on the command line keeps etcd out of it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

KEY = "secret"
SECRET_BYTES = 32

# A place that keeps one value under a key, created only if absent (etcd in a cluster; a
# dict in a unit test): (created?, the value now held).
CreateIfAbsent = Callable[[str, bytes], Awaitable[tuple[bool, bytes]]]


class _HasCreateIfAbsent(Protocol):
    async def create_if_absent(self, key: str, value: bytes) -> tuple[bool, object]: ...


def etcd_source(client: _HasCreateIfAbsent) -> CreateIfAbsent:
    """The secret kept in etcd through ``etcd_client.EtcdClient.create_if_absent``."""

    async def create_if_absent(key: str, value: bytes) -> tuple[bool, bytes]:
        created, kv = await client.create_if_absent(key, value)
        return created, kv.value  # type: ignore[attr-defined]

    return create_if_absent


async def cluster_secret(configured: str | None, source: CreateIfAbsent) -> bytes:
    """The secret as bytes: the configured one, else the one in ``source`` (created there
    now if this is the cluster's first node)."""
    if configured:
        return configured.encode()
    fresh = base64.urlsafe_b64encode(os.urandom(SECRET_BYTES))
    _, value = await source(KEY, fresh)
    if not value:
        raise ValueError(f"the cluster secret in etcd ({KEY!r}) is empty")
    return value
