"""A definition change is answered -ok once every linked node has applied it.

Why: RabbitMQ answers declare-ok and bind-ok after the change is in every node's copy
of the metadata, so a client may bind on node 2 and have a publish made on node 1 a
moment later route through that binding (celery's remote control does exactly this: its
reply queue is bound on the client's node, the worker replies from its own). Here a
change reaches the other nodes through their etcd watches a few milliseconds after etcd
took it, and a publish routed in between was dropped as unroutable.

So after etcd committed a change at revision R, the writer asks each node it has a link
to (``METHOD``, R) and answers -ok once all replied. A node replies when its definitions
view has applied R and the broker has taken the changes (a write that changed nothing
made no watch event: after ``ASK_AFTER`` it reads the newest revision etcd holds under
the prefix and waits for that instead), or after ``WAIT`` (a paused or
lagging node delays -ok by at most that, never fails it). A node without a link, or
whose link has been silent for two heartbeats (down, paused, cut off), is not waited
for: it reads everything again from etcd when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from smartbroker.cluster.etcd_client import EtcdUnavailable
from smartbroker.cluster.link_peer import CallError, PeerDown

log = logging.getLogger("smartbroker.cluster")

METHOD = "defs.seen"
WAIT = 1.0  # seconds a node waits for its watch before it answers anyway
_CHECK = 0.002  # seconds between two looks (the watch has no per-revision wake-up)
ASK_AFTER = 0.02  # seconds without the revision before etcd is asked what it holds
_REVISION = struct.Struct(">Q")


class DefinitionsSeen:
    """``await everywhere(revision)``; serves the other nodes' ``METHOD`` calls."""

    def __init__(self, link: Any, view: Any, sync: Any, etcd: Any) -> None:
        """``view``: the definitions' ``WatchedPrefix``; ``sync``: ``DefinitionsSync``;
        ``etcd``: the node's ``EtcdClient``."""
        self.link = link
        self.etcd = etcd
        self.view = view
        self.sync = sync
        link.on_call(METHOD, self._answer)

    def applied(self, revision: int) -> bool:
        return self.view.revision >= revision and not self.sync.busy

    async def everywhere(self, revision: int) -> None:
        """Every linked node applied ``revision`` (or was given ``WAIT`` to)."""
        peers = [peer for peer in self.link.peers() if self.link.lively(peer)]
        if not peers:
            return
        payload = _REVISION.pack(revision)
        answers = await asyncio.gather(
            *(self.link.call(peer, METHOD, payload, WAIT + 0.5) for peer in peers),
            return_exceptions=True)
        for peer, answer in zip(peers, answers, strict=True):
            if isinstance(answer, (PeerDown, CallError, TimeoutError)):
                log.debug("node %s did not confirm definitions revision %d: %s", peer,
                          revision, answer)
            elif isinstance(answer, BaseException):
                raise answer

    async def _answer(self, peer: str, payload: bytes) -> bytes:
        (revision,) = _REVISION.unpack(payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        ask = loop.time() + ASK_AFTER
        while not self.applied(revision) and loop.time() < deadline:
            if loop.time() < ask:
                await asyncio.sleep(_CHECK)
                continue
            ask = deadline  # once: a write that changed nothing (a delete of a missing
            try:  # key) made no event to wait for; what etcd holds now is the bound
                newest = await asyncio.wait_for(self.etcd.newest(self.view.root),
                                                max(deadline - loop.time(), 0.001))
            except (TimeoutError, EtcdUnavailable):
                break
            revision = min(revision, newest)
        return b""
