"""/api/vhost-limits and /api/user-limits: RabbitMQ's limits endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.management.deps import AdminDep, CallerDep, StateDep
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.names import check_numbers
from smartbroker.management.routers.common import api_router

router = api_router()


def _vhost_rows(broker: Any, only: str | None = None) -> list[dict[str, Any]]:
    return [{"vhost": name, "value": dict(vh.limits)} for name, vh in broker.vhosts.items()
            if vh.limits and (only is None or name == only)]


def _user_rows(broker: Any, only: str | None = None) -> list[dict[str, Any]]:
    return [{"user": name, "value": dict(u.limits)} for name, u in broker.users.users.items()
            if u.limits and (only is None or name == only)]


@router.get("/vhost-limits")
async def vhost_limits(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    return [row for row in _vhost_rows(state.broker) if caller.lists_vhost(row["vhost"])]


@router.get("/vhost-limits/{vhost}")
async def vhost_limits_of(vhost: str, state: StateDep) -> list[dict[str, Any]]:
    if vhost not in state.broker.vhosts:
        raise not_found()
    return _vhost_rows(state.broker, vhost)


@router.get("/user-limits")
async def user_limits(state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    """Others' limits take monitoring; a management user sees its own."""
    return [row for row in _user_rows(state.broker) if caller.sees_owner(row["user"])]


@router.get("/user-limits/{user}")
async def user_limits_of(user: str, state: StateDep, caller: CallerDep) -> list[dict[str, Any]]:
    if user not in state.broker.users.users:
        raise not_found()
    if not caller.sees_owner(user):
        return []
    return _user_rows(state.broker, user)


async def _set(kind: str, owner: str, name: str, request: Request, state: Any) -> Response:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body is not JSON") from None
    check_numbers(body, "limit")
    value = body.get("value") if isinstance(body, dict) else None
    if value is None:
        raise bad_request('body must be {"value": <integer>}')
    try:
        state.broker.set_limit(kind, owner, name, value)
    except KeyError:
        raise not_found() from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return Response(status_code=204)


async def _clear(kind: str, owner: str, name: str, state: Any) -> Response:
    try:
        state.broker.set_limit(kind, owner, name, None)
    except KeyError:
        raise not_found() from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return Response(status_code=204)


@router.put("/vhost-limits/{vhost}/{name}", status_code=204)
async def put_vhost_limit(vhost: str, name: str, request: Request, state: StateDep,
                          _: AdminDep) -> Response:
    return await _set("vhost", vhost, name, request, state)


@router.delete("/vhost-limits/{vhost}/{name}", status_code=204)
async def delete_vhost_limit(vhost: str, name: str, state: StateDep, _: AdminDep) -> Response:
    return await _clear("vhost", vhost, name, state)


@router.put("/user-limits/{user}/{name}", status_code=204)
async def put_user_limit(user: str, name: str, request: Request, state: StateDep,
                         _: AdminDep) -> Response:
    return await _set("user", user, name, request, state)


@router.delete("/user-limits/{user}/{name}", status_code=204)
async def delete_user_limit(user: str, name: str, state: StateDep, _: AdminDep) -> Response:
    return await _clear("user", user, name, state)
