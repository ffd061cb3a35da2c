"""Cluster mode: a change made through the API is answered once etcd accepted it.

The routers change definitions synchronously, as the AMQP handlers do; in a cluster the
definitions store commits to etcd afterwards (``DefinitionsRecorder.pending()``). This
ASGI wrapper holds the response of a PUT, POST or DELETE until that commit is done, so a
2xx means what a declare-ok means; a change etcd refused is answered 500 instead (the
store has logged it and dropped it from this node's view), and one etcd did not commit
within ``cluster_metadata_timeout`` 503 ``service_unavailable`` (RabbitMQ's answer when
its metadata store cannot commit; the change stays queued and may still land). On a single node the store
commits in the call (``commits_later`` is False) and nothing is wrapped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from smartbroker.management.state import ManagementState

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class DefinitionsCommitted:
    def __init__(self, app: Callable, state: ManagementState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        recorder = self.state.broker.recorder
        if scope["type"] != "http" or scope["method"] in _READS or recorder is None \
                or not recorder.commits_later:
            await self.app(scope, receive, send)
            return
        refused: list[bytes] = []

        async def send_after_commit(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                pending = recorder.pending()
                if pending is not None:
                    status = 500
                    try:
                        await pending
                    except TimeoutError as exc:  # RabbitMQ: service_unavailable (503)
                        status = 503
                        refused.append(json.dumps({"error": "service_unavailable",
                                                   "reason": str(exc)}).encode())
                    except Exception as exc:
                        refused.append(json.dumps({
                            "error": "internal_error",
                            "reason": f"the definitions store refused the change: {exc}",
                        }).encode())
                    if refused:
                        message = {"type": "http.response.start", "status": status, "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(refused[0])).encode())]}
            elif refused:  # the route's own body is replaced by the refusal
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": refused[0]}
            await send(message)

        await self.app(scope, receive, send_after_commit)
