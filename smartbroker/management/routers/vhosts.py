"""/api/vhosts[/{vhost}] and the vhost's permissions."""

from __future__ import annotations

from typing import Any

from fastapi import Body as BodyParam
from fastapi import Response

from smartbroker.broker.permissions import Permission
from smartbroker.management.deps import AdminDep, CallerDep, StateDep, lookup_vhost
from smartbroker.management.models import VhostBody, split_tags
from smartbroker.management.routers.common import api_router
from smartbroker.management.views import vhost_json

router = api_router()


def create_vhost(state: Any, name: str, body: VhostBody | None = None) -> bool:
    """Create ``name`` if missing (True if created); record its description and tags."""
    broker = state.broker
    created = name not in broker.vhosts
    if created:
        broker.add_vhost(name)
        state.hook_vhosts()
    if body is not None:
        state.vhost_meta[name] = {"description": body.description, "tags": split_tags(body.tags),
                                  "default_queue_type": body.default_queue_type}
    return created


@router.get("/vhosts")
async def list_vhosts(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    """The vhosts the caller may log into (monitoring and administrators: all)."""
    return [vhost_json(v, state) for name, v in list(state.broker.vhosts.items())
            if caller.lists_vhost(name)]


@router.get("/vhosts/{vhost}")
async def get_vhost(vhost: str, state: StateDep) -> dict[str, Any]:
    return vhost_json(lookup_vhost(state.broker, vhost), state)


@router.put("/vhosts/{vhost}", status_code=201)
async def put_vhost(vhost: str, state: StateDep, user: AdminDep,
              body: VhostBody | None = BodyParam(None)) -> Response:  # noqa: B008
    created = create_vhost(state, vhost, body or VhostBody())
    if created:  # as RabbitMQ's API: the creator may use the vhost it made
        state.broker.permissions.set(Permission(user.name, vhost))
    return Response(status_code=201 if created else 204)


@router.delete("/vhosts/{vhost}", status_code=204)
async def delete_vhost(vhost: str, state: StateDep, _: AdminDep) -> Response:
    lookup_vhost(state.broker, vhost)
    state.broker.delete_vhost(vhost)  # closes its connections, deletes its queues
    state.vhost_meta.pop(vhost, None)
    return Response(status_code=204)


@router.get("/vhosts/{vhost}/permissions")
async def vhost_permissions(vhost: str, state: StateDep) -> list[dict[str, str]]:
    lookup_vhost(state.broker, vhost)
    return [p.as_json() for (v, _), p in state.broker.permissions.entries.items() if v == vhost]
