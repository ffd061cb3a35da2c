"""Shared router construction: authenticated, with percent-decoded path parameters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from smartbroker.management.deps import DecodedRoute, authorize
from smartbroker.management.listing import list_response


def api_router() -> APIRouter:
    """Every route authenticates and passes its rule in ``authz.ENDPOINT_RULES``."""
    return APIRouter(prefix="/api", route_class=DecodedRoute, dependencies=[Depends(authorize)])


def exchange_name(name: str) -> str:
    """RabbitMQ names the default exchange ``amq.default`` in URLs."""
    return "" if name == "amq.default" else name


async def paginate(request: Request, docs: list[dict[str, Any]]) -> Any:
    """RabbitMQ's list options over already rendered documents (see ``listing``)."""
    return await list_response(request, docs, _same, name=lambda d: str(d.get("name", "")))


def _same(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def vhost_filter(caller: Any, broker: Any, vhost: str | None = None) -> list[Any]:
    """The vhosts whose objects ``caller`` may list (one, if the route names it)."""
    if vhost is not None:
        from smartbroker.management.deps import lookup_vhost

        return [lookup_vhost(broker, vhost)]
    return [vh for name, vh in list(broker.vhosts.items()) if caller.sees_vhost(name)]
