"""/api/connections[/{name}], /api/channels, /api/consumers (+ per-vhost variants)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.management.deps import StateDep, lookup_vhost
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


def _conns(state: Any, vhost: str | None) -> list[Any]:
    conns = open_connections(state)
    if vhost is not None:
        lookup_vhost(state.broker, vhost)
        conns = [c for c in conns if c.vhost.name == vhost]
    return conns


def _find(state: Any, name: str) -> Any:
    for conn in open_connections(state):
        if conn.name == name:
            return conn
    raise not_found()


@router.get("/connections")
async def list_connections(request: Request, state: StateDep) -> Any:
    return await paginate(request, [connection_json(c, state) for c in _conns(state, None)])


@router.get("/vhosts/{vhost}/connections")
async def vhost_connections(vhost: str, state: StateDep) -> list[dict[str, Any]]:
    return [connection_json(c, state) for c in _conns(state, vhost)]


@router.get("/connections/{name}")
async def get_connection(name: str, state: StateDep) -> dict[str, Any]:
    return connection_json(_find(state, name), state)


@router.delete("/connections/{name}", status_code=204)
async def close_connection(name: str, request: Request, state: StateDep) -> Response:
    conn = _find(state, name)
    reason = request.headers.get("x-reason", "Closed via management plugin")
    conn.server_close(320, f"CONNECTION_FORCED - {reason}")
    return Response(status_code=204)


@router.get("/connections/{name}/channels")
async def connection_channels(name: str, state: StateDep) -> list[dict[str, Any]]:
    conn = _find(state, name)
    return [channel_json(conn, ch, state) for ch in conn.channels.values()]


def _channels(state: Any, vhost: str | None) -> list[dict[str, Any]]:
    return [channel_json(c, ch, state) for c in _conns(state, vhost)
            for ch in list(c.channels.values())]


@router.get("/channels")
async def list_channels(request: Request, state: StateDep) -> Any:
    return await paginate(request, _channels(state, None))


@router.get("/vhosts/{vhost}/channels")
async def vhost_channels(vhost: str, state: StateDep) -> list[dict[str, Any]]:
    return _channels(state, vhost)


@router.get("/channels/{name}")
async def get_channel(name: str, state: StateDep) -> dict[str, Any]:
    for conn in open_connections(state):
        for ch in conn.channels.values():
            if channel_name(conn, ch.number) == name:
                return channel_json(conn, ch, state)
    raise not_found()


def _consumers(state: Any, vhost: str | None) -> list[dict[str, Any]]:
    return [consumer_json(c, ch, consumer) for c in _conns(state, vhost)
            for ch in list(c.channels.values()) for consumer in list(ch.consumers.values())]


@router.get("/consumers")
async def list_consumers(state: StateDep) -> list[dict[str, Any]]:
    return _consumers(state, None)


@router.get("/consumers/{vhost}")
async def vhost_consumers(vhost: str, state: StateDep) -> list[dict[str, Any]]:
    return _consumers(state, vhost)
