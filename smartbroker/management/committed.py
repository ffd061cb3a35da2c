"""Cluster mode: a change made through the API is answered once etcd accepted it.

The routers change definitions synchronously, as the AMQP handlers do; in a cluster the
definitions store commits to etcd afterwards (``DefinitionsRecorder.pending()``). This
ASGI wrapper holds the response of a PUT, POST or DELETE until that commit is done, so a
204 means what a declare-ok means. On a single node ``pending()`` is None and nothing
waits; reads pass straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from smartbroker.management.state import ManagementState

log = logging.getLogger("smartbroker.management")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class DefinitionsCommitted:
    def __init__(self, app: Callable, state: ManagementState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return

        async def send_after_commit(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                recorder = self.state.broker.recorder
                pending = recorder.pending() if recorder is not None else None
                if pending is not None:
                    try:
                        await pending
                    except Exception as exc:  # refused: the store logged it and dropped it
                        log.error("%s %s: the definitions store refused the change: %s",
                                  scope["method"], scope.get("path"), exc)
            await send(message)

        await self.app(scope, receive, send_after_commit)
