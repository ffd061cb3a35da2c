"""Before a 404 about a queue or exchange, this node catches up with etcd.

Why: RabbitMQ makes a queue visible on every node before it answers declare-ok. Here the
declaring node answers -ok once etcd took the definition, and the other nodes learn of it
through their etcd watch a few milliseconds later; a client that declares on node 1 and
consumes (or passively declares, binds, gets, publishes) on node 2 in between would get
``404 NOT_FOUND`` for a queue that exists.

So, in cluster mode, a 404 is answered only after this node's watches have applied
everything etcd held when the 404 was about to go out: one small etcd read per watched
prefix (the newest mod revision under ``defs/`` and ``placement/``), then a wait until
the definitions view and the placement table have applied those revisions, the
definitions sync has applied them to the broker, and no queue of the vhost is a stand-in
still waiting for its placement (a consumer added to a stand-in would be cancelled when
the placement comes; at most ``STAND_IN_WAIT`` of that). Then the front end runs the
method again (``server/connection.py``). Bounded by ``DEADLINE``: an unreachable etcd or a watch that lags longer answers the 404
as it was. Only the 404 path pays; the wait checks every few ms (it is rare and short,
and the watch loops have no per-revision wake-up to hook into).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from smartbroker.cluster.etcd_client import EtcdUnavailable
from smartbroker.cluster.exclusive_queues import released
from smartbroker.cluster.placement import PREFIX as PLACEMENTS
from smartbroker.cluster.remote_queue import RemoteQueue

log = logging.getLogger("smartbroker.cluster")

DEADLINE = 3.0  # seconds: then the 404 goes out anyway
# a stand-in's placement is written next to its definition, so it comes within ms; one
# stuck without a placement (a failed write) must not slow every 404 of its vhost by 3 s
STAND_IN_WAIT = 0.5
_CHECK = 0.003  # seconds between two looks while the watches catch up


class CatchUp:
    """``await catch_up(vhost)``: this node has seen what etcd holds now (or gave up)."""

    def __init__(self, etcd: Any, view: Any, sync: Any, forwarding: Any = None) -> None:
        """``view``: the definitions' ``WatchedPrefix``; ``sync``: ``DefinitionsSync``;
        ``forwarding``: ``QueueForwarding`` (its placement table and vhosts), if any."""
        self.etcd = etcd
        self.view = view
        self.sync = sync
        self.forwarding = forwarding

    async def __call__(self, vhost: str | None = None, locked: str | None = None) -> None:
        """``locked``: a 405 for that queue is about to go out (another node's exclusive
        queue whose deletion etcd may already hold): only that is waited for."""
        if locked is not None:
            if self.forwarding is not None and vhost is not None:
                await released(self.etcd, self.forwarding.vhosts, vhost, locked)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        reads = [self.etcd.newest(self.view.root)]
        if self.forwarding is not None:
            reads.append(self.etcd.newest(PLACEMENTS))
        try:
            wanted = await asyncio.wait_for(asyncio.gather(*reads), DEADLINE)
        except (TimeoutError, EtcdUnavailable) as exc:
            log.info("cannot check etcd before a 404: %s", exc)
            return
        while not self._watched(wanted):
            if loop.time() >= deadline:
                log.info("the etcd watches lag more than %.0f s: answering 404", DEADLINE)
                return
            await asyncio.sleep(_CHECK)
        deadline = min(deadline, loop.time() + STAND_IN_WAIT)
        waiting = self._stand_ins(vhost, None)  # one scan of the vhost, then only these
        while waiting and loop.time() < deadline:
            await asyncio.sleep(_CHECK)
            waiting = self._stand_ins(vhost, waiting)

    def stand_in(self, vhost: str, name: str) -> bool:
        """Queue ``name`` is known here without its placement yet (declared on another
        node a moment ago): the API catches up before it shows it (its leader, counts)."""
        return bool(self._stand_ins(vhost, [name]))

    def _watched(self, wanted: list[int]) -> bool:
        """The watches applied what etcd held (and the broker took the definitions)."""
        if self.view.revision < wanted[0] or self.sync.busy:
            return False
        return self.forwarding is None or self.forwarding.placement.revision >= wanted[1]

    def _stand_ins(self, vhost: str | None, among: list[str] | None) -> list[str]:
        """The queues of ``vhost`` (``among`` these names, or all) known here without
        their placement: a consumer added to one would be cancelled when it comes."""
        forwarding = self.forwarding
        host = forwarding.vhosts.get(vhost) if forwarding is not None and vhost else None
        if host is None:
            return []
        placement = forwarding.placement
        queues = host.queues
        names = queues if among is None else among
        return [name for name in names if (q := queues.get(name)) is not None
                and placement.leader(vhost, name) is None and q.exclusive_owner is None
                and not isinstance(q, RemoteQueue)]
