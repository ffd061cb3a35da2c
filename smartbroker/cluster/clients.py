"""Every node's client connections, channels and consumers, for any node's management API.

Why: RabbitMQ's ``/api/connections``, ``/api/channels`` and ``/api/consumers`` list the
clients of every node of the cluster (each row with its ``node``), and closing a
connection through the API works whatever node holds it. Here each node knows only its
own clients, so it answers two cluster link calls:

* ``CLIENTS``: its rows, as its own management API renders them (JSON);
* ``CLOSE``: close one of its connections by name (``{"closed": true}`` if it held it).

A node's API asks every linked node for their rows at most once per
``collect_statistics_interval`` (the same freshness as the queue counts; concurrent
requests share one round of calls), and a node that does not answer within
``CALL_TIMEOUT`` is left out of that round. The caller filters the rows (user, vhost).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("smartbroker.cluster")

CLIENTS = "mgmt.clients"
CLOSE = "mgmt.close_connection"
CALL_TIMEOUT = 2.0  # seconds a node's answer is waited for
KINDS = ("connections", "channels", "consumers")

Rows = dict[str, list[dict[str, Any]]]


class ClusterClients:
    """``local()``: this node's rows by kind; ``close(name, reason)``: True if this node
    held connection ``name`` (and closed it)."""

    def __init__(self, link: Any, interval: float, local: Callable[[], Rows],
                 close: Callable[[str, str], bool]) -> None:
        self.link = link
        self.interval = interval
        self.local = local
        self.close_local = close
        self._rows: Rows = {kind: [] for kind in KINDS}
        self._at = -interval  # loop time of the last round (none yet)
        self._round: asyncio.Future[None] | None = None
        link.on_call(CLIENTS, self._answer_rows)
        link.on_call(CLOSE, self._answer_close)

    # -- answering the others ------------------------------------------------------------
    def _answer_rows(self, peer: str, payload: bytes) -> bytes:
        return json.dumps(self.local(), default=str).encode()

    def _answer_close(self, peer: str, payload: bytes) -> bytes:
        try:
            ask = json.loads(payload)
            closed = self.close_local(str(ask["name"]), str(ask.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            closed = False
        return json.dumps({"closed": closed}).encode()

    # -- asking them ---------------------------------------------------------------------
    async def remote(self, fresh: bool = False) -> Rows:
        """The other nodes' rows, at most ``interval`` old (``fresh``: asked now)."""
        loop = asyncio.get_running_loop()
        if fresh or loop.time() - self._at >= self.interval:
            if self._round is None or self._round.done():
                self._round = asyncio.ensure_future(self._ask_all())
            await asyncio.shield(self._round)
        return self._rows

    async def _ask_all(self) -> None:
        peers = list(self.link.peers())
        answers = await asyncio.gather(*(self._ask(peer) for peer in peers))
        rows: Rows = {kind: [] for kind in KINDS}
        for answer in answers:
            for kind in KINDS:
                rows[kind].extend(answer.get(kind) or ())
        self._rows = rows
        self._at = asyncio.get_running_loop().time()

    async def _ask(self, peer: str) -> Rows:
        try:
            answer = json.loads(await self.link.call(peer, CLIENTS, b"", CALL_TIMEOUT))
        except Exception as exc:  # down, slow, or garbage: left out of this round
            log.info("clients of node %s: %s", peer, exc)
            return {}
        return answer if isinstance(answer, dict) else {}

    async def close(self, node: str, name: str, reason: str) -> bool:
        """Close connection ``name`` on ``node``; False if it does not hold it (or is gone)."""
        ask = json.dumps({"name": name, "reason": reason}).encode()
        try:
            answer = json.loads(await self.link.call(node, CLOSE, ask, CALL_TIMEOUT))
        except Exception as exc:
            log.info("closing connection %r on node %s: %s", name, node, exc)
            return False
        self._at = -self.interval  # the next listing asks again: it is gone
        return bool(isinstance(answer, dict) and answer.get("closed"))
