"""Request dependencies: basic auth against broker users, state and vhost lookups, and
a route class that decodes percent-encoded path segments (``%2F`` is the vhost ``/``)."""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match

from smartbroker.management.errors import not_authorised, not_authorized, not_found

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker
    from smartbroker.broker.vhost import VirtualHost

MANAGEMENT_TAGS = {"administrator", "management", "monitoring", "policymaker"}


class DecodedRoute(APIRoute):
    """Path parameters arrive still percent-encoded (see ``RawPathMiddleware``); decode
    them after matching so ``/api/queues/%2F/a%2Fb`` is vhost ``/``, queue ``a/b``.

    Results are rendered by ``jsonio.DeepJSONResponse``: they carry client-chosen tables
    of any depth, which FastAPI's own encoders (recursive, depth-limited) cannot take."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model"] = None
        super().__init__(path, _rendered(endpoint, lambda: self.status_code), **kwargs)

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        match, child = super().matches(scope)
        params = child.get("path_params")
        if match is not Match.NONE and params:
            child["path_params"] = {k: unquote(v) if isinstance(v, str) else v
                                    for k, v in params.items()}
        return match, child


def _rendered(endpoint: Callable[..., Any], status: Callable[[], int | None]) -> Callable[..., Any]:
    """``endpoint`` returning a ``DeepJSONResponse`` (with the route's status code) for
    whatever it returns that is not already a response."""
    from smartbroker.management.jsonio import DeepJSONResponse

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Response):
            return result
        if isinstance(result, BaseModel):  # our own response models: shallow
            result = result.model_dump(mode="json", by_alias=True)
        return DeepJSONResponse(result, status_code=status() or 200)

    return run


class RawPathMiddleware:
    """Route on the raw path, so an encoded ``/`` inside a segment stays inside it, and
    read API bodies as JSON whatever their content type (as RabbitMQ does)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            raw = scope["raw_path"].decode("latin-1").split("?", 1)[0]
            segments = [unquote(s) for s in raw.split("/")]
            scope = dict(scope)
            scope["path"] = "/".join(s.replace("%", "%25").replace("/", "%2F") for s in segments)
            if scope["method"] in ("PUT", "POST") and raw.startswith("/api/"):
                # RabbitMQ reads every body as JSON whatever its content type (curl -d)
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)


async def get_state(request: Request) -> Any:  # ManagementState
    return request.app.state.management


async def get_broker(request: Request) -> Any:  # Broker
    return request.app.state.management.broker


async def authenticate(request: Request) -> Any:  # smartbroker.auth.User
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise not_authorized("Login failed")
    try:
        name, _, password = base64.b64decode(token.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise not_authorized("Login failed") from None
    user = request.app.state.management.broker.users.authenticate(name, password)
    if user is None:
        raise not_authorized("Login failed")
    if not MANAGEMENT_TAGS & set(user.tags):
        raise not_authorised("Not management user")
    return user


async def authorize(request: Request, user: Annotated[Any, Depends(authenticate)]) -> Any:
    """The caller of an API route, admitted by the route's rule (``authz.ENDPOINT_RULES``;
    routes without one are administrator-only)."""
    from smartbroker.management.authz import ENDPOINT_RULES, Caller, Rule

    caller = Caller(user, request.app.state.management.broker)
    route = request.scope.get("route")
    rule = ENDPOINT_RULES.get((request.method, getattr(route, "path", "")), Rule.ADMIN)
    caller.enforce(rule, request.path_params.get("vhost"))
    request.state.caller = caller
    return caller


async def require_admin(user: Annotated[Any, Depends(authenticate)]) -> Any:
    if "administrator" not in user.tags:
        raise not_authorised("Not administrator user")
    return user


def lookup_vhost(broker: Broker, name: str) -> VirtualHost:
    vhost = broker.vhosts.get(name)
    if vhost is None:
        raise not_found()
    return vhost


StateDep = Annotated[Any, Depends(get_state)]  # ManagementState
BrokerDep = Annotated[Any, Depends(get_broker)]  # Broker
UserDep = Annotated[Any, Depends(authenticate)]  # smartbroker.auth.User
AdminDep = Annotated[Any, Depends(require_admin)]
CallerDep = Annotated[Any, Depends(authorize)]  # smartbroker.management.authz.Caller
