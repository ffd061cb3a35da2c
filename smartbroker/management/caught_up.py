"""Cluster mode: an API 404 about a definition waits until this node caught up with etcd.

Why: a queue, exchange, binding, user... declared on another node a moment ago may not
have reached this node's watch yet, and RabbitMQ's API (like its AMQP) shows it on every
node once declared. AMQP already catches up before a 404 (server/not_found.py); this ASGI
wrapper does the same for the API: a 404 from a definitions route is held back, the node
awaits ``broker.catch_up`` (cluster/visibility.py, bounded), and the request runs once
more with its body replayed; that answer goes out, 404 or not. Only the 404 path pays; on
a single node ``broker.catch_up`` is None and nothing is wrapped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from smartbroker.management.state import ManagementState

log = logging.getLogger("smartbroker.management")

# the routes whose 404 may be a definition this node has not applied yet: the ones
# carrying a vhost in their second segment first
_IN_VHOST = ("queues", "exchanges", "bindings", "streams", "policies", "permissions",
             "topic-permissions", "consumers", "dlq", "groups")
_OTHERS = ("vhosts", "users", "user-limits", "vhost-limits", "definitions")


def _vhost(scope: dict[str, Any]) -> tuple[bool, str | None]:
    """(whether a 404 of this request may need the catch-up, its vhost if it names one)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    parts = raw.decode("latin-1").split("?", 1)[0].split("/")
    if len(parts) < 4 or parts[1] != "api":  # ["", "api", kind, vhost...]
        return False, None
    kind = parts[2]
    if kind in _IN_VHOST:
        return True, unquote(parts[3])
    return kind in _OTHERS, None


class CaughtUp:
    def __init__(self, app: Callable, state: ManagementState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        catch_up = self.state.broker.catch_up
        if scope["type"] != "http" or catch_up is None:
            await self.app(scope, receive, send)
            return
        retry, vhost = _vhost(scope)
        if not retry:
            await self.app(scope, receive, send)
            return
        received: list[dict[str, Any]] = []
        held = False

        async def recording() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                received.append(message)
            return message

        async def unless_404(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 404:
                held = True
            if not held:
                await send(message)

        await self.app(scope, recording, unless_404)
        if not held:
            return
        try:
            await catch_up(vhost)  # bounded; etcd unreachable gives up by itself
        except Exception as exc:  # never a 500 instead of the 404: answer again as it is
            log.warning("catching up with etcd before an API 404 failed: %s", exc)
        replay = list(received)

        async def replaying() -> dict[str, Any]:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replaying, send)
