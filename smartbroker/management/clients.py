"""Cluster mode: the clients of every node in this node's connections, channels and
consumers lists, and closing a connection whichever node holds it (RabbitMQ's API lists
every node's, each row with its ``node``). The other nodes' rows come over the cluster
link (cluster/clients.py), at most ``collect_statistics_interval`` old; on a single node
``state.cluster`` is None and every function here adds nothing.
"""

from __future__ import annotations

from typing import Any

from smartbroker.management.state import ManagementState
from smartbroker.management.views import (
    channel_json,
    connection_json,
    consumer_json,
    open_connections,
)


def local_rows(state: ManagementState) -> dict[str, list[dict[str, Any]]]:
    """This node's clients as its API renders them (consumers also name their channel's
    user and node, as RabbitMQ's ``channel_details`` do: the asking node filters by it)."""
    conns = open_connections(state)
    consumers = []
    for conn in conns:
        user = getattr(conn.user, "name", None)
        for ch in list(conn.channels.values()):
            for consumer in list(ch.consumers.values()):
                row = consumer_json(conn, ch, consumer)
                row["channel_details"].update(user=user, node=state.node)
                consumers.append(row)
    return {"connections": [connection_json(c, state) for c in conns],
            "channels": [channel_json(c, ch, state) for c in conns
                         for ch in list(c.channels.values())],
            "consumers": consumers}


def close_local(state: ManagementState, name: str, reason: str) -> bool:
    """Close this node's connection ``name`` as ``DELETE /api/connections/{name}`` does."""
    for conn in open_connections(state):
        if conn.name == name:
            conn.server_close(320, f"CONNECTION_FORCED - {reason}")
            return True
    return False


def attach(state: ManagementState) -> None:
    """Answer the other nodes' asks for this node's clients (cluster mode only)."""
    if state.cluster is not None:
        state.cluster.serve_clients(lambda: local_rows(state),
                                    lambda name, reason: close_local(state, name, reason))


def owner(kind: str, row: dict[str, Any]) -> Any:
    return (row.get("channel_details") or {}).get("user") if kind == "consumers" \
        else row.get("user")


def vhost_of(kind: str, row: dict[str, Any]) -> Any:
    return (row.get("queue") or {}).get("vhost") if kind == "consumers" else row.get("vhost")


def _clients(state: ManagementState) -> Any:
    return getattr(state.cluster, "clients", None) if state.cluster is not None else None


async def remote_rows(state: ManagementState, kind: str, caller: Any,
                      vhost: str | None = None, fresh: bool = False) -> list[dict[str, Any]]:
    """The other nodes' rows of ``kind`` that ``caller`` may see (of ``vhost``, if given)."""
    clients = _clients(state)
    if clients is None:
        return []
    rows = (await clients.remote(fresh))[kind]
    return [row for row in rows if caller.sees_owner(owner(kind, row))
            and (vhost is None or vhost_of(kind, row) == vhost)]


async def find_remote(state: ManagementState, kind: str, name: str) -> dict[str, Any] | None:
    """Another node's connection or channel called ``name`` (asked again if the last
    answers do not have it: it may be newer than them)."""
    clients = _clients(state)
    if clients is None:
        return None
    for fresh in (False, True):
        for row in (await clients.remote(fresh))[kind]:
            if row.get("name") == name:
                return row
    return None


async def close_remote(state: ManagementState, row: dict[str, Any], reason: str) -> bool:
    clients = _clients(state)
    return clients is not None and await clients.close(str(row.get("node")),
                                                        str(row["name"]), reason)
