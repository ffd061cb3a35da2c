"""/api/connections[/{name}], /api/channels, /api/consumers (+ per-vhost variants)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

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


def _find(state: Any, name: str) -> Any:
    for conn in open_connections(state):
        if conn.name == name:
            return conn
    raise not_found()


@router.get("/connections")
async def list_connections(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, [connection_json(c, state)
                                    for c in _conns(state, None, caller)])


@router.get("/vhosts/{vhost}/connections")
async def vhost_connections(vhost: str, state: StateDep,
                            caller: CallerDep) -> list[dict[str, Any]]:
    return [connection_json(c, state) for c in _conns(state, vhost, caller)]


@router.get("/connections/{name}")
async def get_connection(name: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    conn = _find(state, name)
    caller.owns(_owner(conn))
    return connection_json(conn, state)


@router.delete("/connections/{name}", status_code=204)
async def close_connection(name: str, request: Request, state: StateDep,
                           caller: CallerDep) -> Response:
    """Closing another user's connection takes an administrator (monitoring is not enough)."""
    conn = _find(state, name)
    caller.owns(_owner(conn), deleting=True)
    reason = request.headers.get("x-reason", "Closed via management plugin")
    conn.server_close(320, f"CONNECTION_FORCED - {reason}")
    return Response(status_code=204)


@router.get("/connections/{name}/channels")
async def connection_channels(name: str, state: StateDep,
                              caller: CallerDep) -> list[dict[str, Any]]:
    conn = _find(state, name)
    caller.owns(_owner(conn))
    return [channel_json(conn, ch, state) for ch in conn.channels.values()]


def _channels(state: Any, vhost: str | None, caller: Any) -> list[dict[str, Any]]:
    return [channel_json(c, ch, state) for c in _conns(state, vhost, caller)
            for ch in list(c.channels.values())]


@router.get("/channels")
async def list_channels(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, _channels(state, None, caller))


@router.get("/vhosts/{vhost}/channels")
async def vhost_channels(vhost: str, state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return _channels(state, vhost, caller)


@router.get("/channels/{name}")
async def get_channel(name: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    for conn in open_connections(state):
        for ch in list(conn.channels.values()):
            if channel_name(conn, ch.number) == name:
                caller.owns(_owner(conn))
                return channel_json(conn, ch, state)
    raise not_found()


def _consumers(state: Any, vhost: str | None, caller: Any) -> list[dict[str, Any]]:
    return [consumer_json(c, ch, consumer) for c in _conns(state, vhost, caller)
            for ch in list(c.channels.values()) for consumer in list(ch.consumers.values())]


@router.get("/consumers")
async def list_consumers(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return _consumers(state, None, caller)


@router.get("/consumers/{vhost}")
async def vhost_consumers(vhost: str, state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    """Any management user; the list holds only what it may see (RabbitMQ: 200 ``[]``)."""
    if vhost not in state.broker.vhosts:
        raise not_found()
    return [c for c in _consumers(state, None, caller) if _vhost_of(c) == vhost]


def _vhost_of(consumer: dict[str, Any]) -> Any:
    return (consumer.get("queue") or {}).get("vhost")
