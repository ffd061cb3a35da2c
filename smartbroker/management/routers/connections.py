"""/api/connections[/{name}], /api/channels, /api/consumers (+ per-vhost variants)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.management import clients
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import not_found
from smartbroker.management.routers.common import api_router, paginate
from smartbroker.management.views import (
    channel_json,
    channel_name,
    connection_json,
    consumer_json,
    open_connections,
)

router = api_router()


def _conns(state: Any, vhost: str | None, caller: Any) -> list[Any]:
    """Open connections (of one vhost) the caller may see: its own, or all for monitoring
    and administrator users (RabbitMQ's ``filter_user``)."""
    conns = [c for c in open_connections(state) if caller.sees_owner(_owner(c))]
    if vhost is not None:
        lookup_vhost(state.broker, vhost)
        conns = [c for c in conns if c.vhost.name == vhost]
    return conns


def _owner(conn: Any) -> str | None:
    user = getattr(conn, "user", None)
    return getattr(user, "name", None)


def _find_local(state: Any, name: str) -> Any:
    for conn in open_connections(state):
        if conn.name == name:
            return conn
    return None


async def _connections(state: Any, vhost: str | None, caller: Any) -> list[dict[str, Any]]:
    """This node's, then (cluster mode) the other nodes' (RabbitMQ lists every node's)."""
    return [*(connection_json(c, state) for c in _conns(state, vhost, caller)),
            *await clients.remote_rows(state, "connections", caller, vhost)]


@router.get("/connections")
async def list_connections(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, await _connections(state, None, caller))


@router.get("/vhosts/{vhost}/connections")
async def vhost_connections(vhost: str, state: StateDep,
                            caller: CallerDep) -> list[dict[str, Any]]:
    return await _connections(state, vhost, caller)


@router.get("/connections/{name}")
async def get_connection(name: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    conn = _find_local(state, name)
    if conn is None:
        row = await _remote(state, "connections", name)
        caller.owns(row.get("user"))
        return row
    caller.owns(_owner(conn))
    return connection_json(conn, state)


async def _remote(state: Any, kind: str, name: str) -> dict[str, Any]:
    """Another node's connection or channel ``name`` (cluster mode), else 404."""
    row = await clients.find_remote(state, kind, name)
    if row is None:
        raise not_found()
    return row


@router.delete("/connections/{name}", status_code=204)
async def close_connection(name: str, request: Request, state: StateDep,
                           caller: CallerDep) -> Response:
    """Closing another user's connection takes an administrator (monitoring is not enough).
    In a cluster, the node holding it closes it."""
    reason = request.headers.get("x-reason", "Closed via management plugin")
    conn = _find_local(state, name)
    if conn is None:
        row = await _remote(state, "connections", name)
        caller.owns(row.get("user"), deleting=True)
        if not await clients.close_remote(state, row, reason):
            raise not_found()
        return Response(status_code=204)
    caller.owns(_owner(conn), deleting=True)
    conn.server_close(320, f"CONNECTION_FORCED - {reason}")
    return Response(status_code=204)


@router.get("/connections/{name}/channels")
async def connection_channels(name: str, state: StateDep,
                              caller: CallerDep) -> list[dict[str, Any]]:
    conn = _find_local(state, name)
    if conn is None:
        row = await _remote(state, "connections", name)
        caller.owns(row.get("user"))
        return [ch for ch in await clients.remote_rows(state, "channels", caller)
                if (ch.get("connection_details") or {}).get("name") == name]
    caller.owns(_owner(conn))
    return [channel_json(conn, ch, state) for ch in conn.channels.values()]


async def _channels(state: Any, vhost: str | None, caller: Any) -> list[dict[str, Any]]:
    return [*(channel_json(c, ch, state) for c in _conns(state, vhost, caller)
              for ch in list(c.channels.values())),
            *await clients.remote_rows(state, "channels", caller, vhost)]


@router.get("/channels")
async def list_channels(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, await _channels(state, None, caller))


@router.get("/vhosts/{vhost}/channels")
async def vhost_channels(vhost: str, state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return await _channels(state, vhost, caller)


@router.get("/channels/{name}")
async def get_channel(name: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    for conn in open_connections(state):
        for ch in list(conn.channels.values()):
            if channel_name(conn, ch.number) == name:
                caller.owns(_owner(conn))
                return channel_json(conn, ch, state)
    row = await _remote(state, "channels", name)
    caller.owns(row.get("user"))
    return row


async def _consumers(state: Any, vhost: str | None, caller: Any) -> list[dict[str, Any]]:
    return [*(consumer_json(c, ch, consumer) for c in _conns(state, vhost, caller)
              for ch in list(c.channels.values()) for consumer in list(ch.consumers.values())),
            *await clients.remote_rows(state, "consumers", caller)]


@router.get("/consumers")
async def list_consumers(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return await _consumers(state, None, caller)


@router.get("/consumers/{vhost}")
async def vhost_consumers(vhost: str, state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    """Any management user; the list holds only what it may see (RabbitMQ: 200 ``[]``)."""
    if vhost not in state.broker.vhosts:
        raise not_found()
    return [c for c in await _consumers(state, None, caller) if _vhost_of(c) == vhost]


def _vhost_of(consumer: dict[str, Any]) -> Any:
    return (consumer.get("queue") or {}).get("vhost")
