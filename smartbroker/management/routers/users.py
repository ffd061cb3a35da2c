"""/api/users[/{name}], /api/permissions[/{vhost}/{user}] and
/api/topic-permissions[/{vhost}/{user}] (administrator only)."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from smartbroker.auth import User
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.management.deps import StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.models import PermissionBody, TopicPermissionBody, UserBody, split_tags
from smartbroker.management.routers.common import api_router
from smartbroker.management.views import user_json

router = api_router()


def put_user_record(state: Any, name: str, body: UserBody) -> bool:
    """Create or update a user; True if created. Without a password the user cannot log in."""
    users = state.broker.users
    existing = users.users.get(name)
    tags = split_tags(body.tags)
    if body.password is not None:
        users.add(name, body.password, tags)
    elif body.password_hash is not None:
        if body.hashing_algorithm not in (None, "rabbit_password_hashing_sha256"):
            raise bad_request(f"unsupported hashing algorithm '{body.hashing_algorithm}'")
        users.save(User(name, body.password_hash, tags))
    elif existing is not None:
        users.save(User(name, existing.password_hash, tags))
        return False
    else:
        users.save(User(name, "", tags))  # passwordless: no login, as RabbitMQ
    return existing is None


@router.get("/users")
async def list_users(state: StateDep) -> list[dict[str, Any]]:
    return [user_json(u) for u in state.broker.users.users.values()]


@router.get("/users/{name}")
async def get_user(name: str, state: StateDep) -> dict[str, Any]:
    user = state.broker.users.users.get(name)
    if user is None:
        raise not_found()
    return user_json(user)


@router.put("/users/{name}", status_code=201)
async def put_user(name: str, body: UserBody, state: StateDep) -> Response:
    created = put_user_record(state, name, body)
    return Response(status_code=201 if created else 204)


@router.delete("/users/{name}", status_code=204)
async def delete_user(name: str, state: StateDep) -> Response:
    if not state.broker.users.delete(name):
        raise not_found()
    perms = state.broker.permissions
    for vhost, user in [k for k in perms.entries if k[1] == name]:
        perms.delete(vhost, user)
    for vhost, user in {k[:2] for k in perms.topic if k[1] == name}:
        perms.delete_topic(vhost, user)
    return Response(status_code=204)


@router.get("/users/{name}/permissions")
async def user_permissions(name: str, state: StateDep) -> list[dict[str, str]]:
    if name not in state.broker.users.users:
        raise not_found()
    return [p.as_json() for (_, u), p in state.broker.permissions.entries.items() if u == name]


@router.get("/permissions")
async def list_permissions(state: StateDep) -> list[dict[str, str]]:
    return [p.as_json() for p in state.broker.permissions.entries.values()]


@router.get("/permissions/{vhost}/{user}")
async def get_permission(vhost: str, user: str, state: StateDep) -> dict[str, str]:
    perm = state.broker.permissions.get(vhost, user)
    if perm is None:
        raise not_found()
    return perm.as_json()


@router.put("/permissions/{vhost}/{user}", status_code=201)
async def put_permission(vhost: str, user: str, body: PermissionBody, state: StateDep) -> Response:
    lookup_vhost(state.broker, vhost)
    if user not in state.broker.users.users:
        raise bad_request(f"no user '{user}'")
    created = state.broker.permissions.get(vhost, user) is None
    state.broker.permissions.set(Permission(user, vhost, body.configure, body.write, body.read))
    return Response(status_code=201 if created else 204)


@router.delete("/permissions/{vhost}/{user}", status_code=204)
async def delete_permission(vhost: str, user: str, state: StateDep) -> Response:
    if not state.broker.permissions.delete(vhost, user):
        raise not_found()
    return Response(status_code=204)


@router.get("/topic-permissions")
async def list_topic_permissions(state: StateDep) -> list[dict[str, str]]:
    return [p.as_json() for p in state.broker.permissions.topic.values()]


@router.get("/users/{name}/topic-permissions")
async def user_topic_permissions(name: str, state: StateDep) -> list[dict[str, str]]:
    if name not in state.broker.users.users:
        raise not_found()
    return [p.as_json() for p in state.broker.permissions.topic.values() if p.user == name]


@router.get("/topic-permissions/{vhost}/{user}")
async def get_topic_permissions(vhost: str, user: str, state: StateDep) -> list[dict[str, str]]:
    found = [p.as_json() for p in state.broker.permissions.topic.values()
             if p.vhost == vhost and p.user == user]
    if not found:
        raise not_found()
    return found


@router.put("/topic-permissions/{vhost}/{user}", status_code=201)
async def put_topic_permission(vhost: str, user: str, body: TopicPermissionBody,
                               state: StateDep) -> Response:
    lookup_vhost(state.broker, vhost)
    if user not in state.broker.users.users:
        raise bad_request(f"no user '{user}'")
    perms = state.broker.permissions
    created = (vhost, user, body.exchange) not in perms.topic
    perms.set_topic(TopicPermission(user, vhost, body.exchange, body.write, body.read))
    return Response(status_code=201 if created else 204)


@router.delete("/topic-permissions/{vhost}/{user}", status_code=204)
async def delete_topic_permissions(vhost: str, user: str, state: StateDep,
                                   exchange: str | None = None) -> Response:
    if not state.broker.permissions.delete_topic(vhost, user, exchange):
        raise not_found()
    return Response(status_code=204)
