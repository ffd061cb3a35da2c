"""/api/policies[/{vhost}[/{name}]]: the core's policies, in RabbitMQ's JSON."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.management.definitions import set_policy
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.names import check_numbers
from smartbroker.management.routers.common import api_router, vhost_filter

router = api_router()


@router.get("/policies")
async def list_policies(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return [p.as_json() for vh in vhost_filter(caller, state.broker)
            for p in list(vh.policies.values())]


@router.get("/policies/{vhost}")
async def vhost_policies(vhost: str, state: StateDep) -> list[dict[str, Any]]:
    return [p.as_json() for p in lookup_vhost(state.broker, vhost).policies.values()]


@router.get("/policies/{vhost}/{name}")
async def get_policy(vhost: str, name: str, state: StateDep) -> dict[str, Any]:
    policy = lookup_vhost(state.broker, vhost).policies.get(name)
    if policy is None:
        raise not_found()
    return policy.as_json()


@router.put("/policies/{vhost}/{name}", status_code=201)
async def put_policy(vhost: str, name: str, request: Request, state: StateDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("not_json") from None
    if not isinstance(body, dict) or "pattern" not in body or "definition" not in body:
        raise bad_request("[{key_missing,pattern},{key_missing,definition}]")
    check_numbers(body, "policy")
    if not isinstance(body["pattern"], str):
        raise bad_request(f"Validation failed\n\npattern should be a binary but was "
                          f"{body['pattern']!r}\n")
    if not isinstance(body["definition"], dict):
        raise bad_request("Validation failed\n\ndefinition must be a JSON object\n")
    created = name not in vh.policies
    set_policy(state.broker, vhost, {**body, "name": name})
    return Response(status_code=201 if created else 204)


@router.delete("/policies/{vhost}/{name}", status_code=204)
async def delete_policy(vhost: str, name: str, state: StateDep) -> Response:
    if not lookup_vhost(state.broker, vhost).clear_policy(name):
        raise not_found()
    return Response(status_code=204)
