"""What the management layer keeps beside the broker: counters that outlive
deleted queues and closed connections, vhost metadata, and the start time."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smartbroker.management.rates import MessageRates, readings

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker

STAT_KEYS = ("publish", "deliver", "ack", "redeliver")


@dataclass
class ManagementState:
    broker: Broker
    started_at: float = field(default_factory=time.time)
    node: str = field(default_factory=lambda: f"smartbroker@{socket.gethostname()}")
    vhost_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    retired_stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))
    retired_bytes: list[int] = field(default_factory=lambda: [0, 0])
    _seen_conns: dict[int, tuple[Any, int, int]] = field(default_factory=dict)
    _hooked: set[int] = field(default_factory=set)
    amqp_port: int | None = None
    http_port: int | None = None
    cluster: Any = None  # cluster mode: the ClusterNode (membership: /api/nodes)
    rates: MessageRates = field(init=False)  # sampled on a timer the server starts

    def __post_init__(self) -> None:
        self.hook_vhosts()
        self.rates = MessageRates(lambda: readings(self),
                                  self.broker.config.collect_statistics_interval / 1000)

    # -- counters that survive deletion --------------------------------------------------
    def hook_vhosts(self) -> None:
        """Fold a deleted queue's counters into the totals (idempotent per vhost)."""
        for vhost in self.broker.vhosts.values():
            if id(vhost) not in self._hooked:
                self._hooked.add(id(vhost))
                vhost.on_queue_deleted.append(self._queue_deleted)

    def _queue_deleted(self, q: Any) -> None:
        for key in STAT_KEYS:
            self.retired_stats[key] += q.stats.get(key, 0)

    def totals(self) -> dict[str, int]:
        self.hook_vhosts()
        out = dict(self.retired_stats)
        for vhost in self.broker.vhosts.values():
            for q in vhost.queues.values():
                for key in STAT_KEYS:
                    out[key] += q.stats.get(key, 0)
        return out

    def bytes_totals(self) -> tuple[int, int]:
        """Bytes in/out of live connections plus what closed ones had when last seen."""
        live = {id(c): c for c in self.broker.connections}
        for cid, (conn, bin_, bout) in list(self._seen_conns.items()):
            if cid not in live or live[cid] is not conn:
                self.retired_bytes[0] += bin_
                self.retired_bytes[1] += bout
                del self._seen_conns[cid]
        total_in, total_out = self.retired_bytes
        for cid, conn in live.items():
            self._seen_conns[cid] = (conn, conn.bytes_in, conn.bytes_out)
            total_in += conn.bytes_in
            total_out += conn.bytes_out
        return total_in, total_out


def resident_memory() -> int:
    """Resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
