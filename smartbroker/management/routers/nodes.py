"""/api/nodes and /api/nodes/{name}: this node in full, and in cluster mode every node of
the cluster as its membership record says (RabbitMQ's field names; memory, disk and file
descriptor figures only for this node, which alone measures them)."""

from __future__ import annotations

import os
import time
from typing import Any

from smartbroker.exchanges import EXCHANGE_TYPES
from smartbroker.management.deps import StateDep
from smartbroker.management.errors import not_found
from smartbroker.management.routers.common import api_router
from smartbroker.management.state import resident_memory
from smartbroker.management.views import open_connections

router = api_router()


def _node(state: Any) -> dict[str, Any]:
    return {
        "name": state.node,
        "type": "disc",
        "running": True,
        "os_pid": str(os.getpid()),
        "mem_used": resident_memory(),
        "mem_alarm": "memory" in state.broker.alarms,
        "disk_free_alarm": "disk" in state.broker.alarms,
        "uptime": int((time.time() - state.started_at) * 1000),
        "processors": os.cpu_count() or 1,
        "rates_mode": "basic",
        "exchange_types": [{"name": n, "description": "", "enabled": True} for n in EXCHANGE_TYPES],
        "partitions": [],
        **_resources(state),
        **_handovers(state.broker),
    }


def _handovers(broker: Any) -> dict[str, Any]:
    """serve --workers: connections this worker handed to a sibling leading their queue,
    took from one, or failed to hand (then kept; server/handoff.py). None elsewhere."""
    moves = broker.handoff
    if moves is None:
        return {}
    return {"connections_handed_over": moves.sent, "connections_taken_over": moves.received,
            "connection_handovers_failed": moves.failed}


def _resources(state: Any) -> dict[str, Any]:
    """The node's limits and use, under RabbitMQ's field names."""
    import resource
    import shutil

    from smartbroker.server.alarms import memory_limit

    cfg = state.broker.config
    try:
        disk_free = shutil.disk_usage(cfg.data_dir).free
    except OSError:
        disk_free = 0
    try:
        fd_used = len(os.listdir("/proc/self/fd"))
    except OSError:
        fd_used = 0
    conns = open_connections(state)
    fd_total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return {"mem_limit": memory_limit(cfg.memory_high_watermark), "disk_free": disk_free,
            "disk_free_limit": cfg.disk_free_limit, "fd_used": fd_used, "fd_total": fd_total,
            "sockets_used": len(conns), "sockets_total": cfg.max_connections,
            "proc_used": 1, "proc_total": 1, "run_queue": 0, "db_dir": str(cfg.data_dir),
            "enabled_plugins": [], "applications": [], "config_files": [], "log_files": [],
            "auth_mechanisms": [{"name": "PLAIN", "enabled": True},
                                {"name": "AMQPLAIN", "enabled": True},
                                {"name": "EXTERNAL", "enabled": bool(getattr(cfg, "tls_cert", None))}]}


def _nodes(state: Any) -> list[dict[str, Any]]:
    """Every node: just this one on a single node; else the cluster's, by name, this one
    measured here and the others as their records say (``running`` from their leases)."""
    if state.cluster is None:
        return [_node(state)]
    return [_node(state) if n["name"] == state.node else n for n in state.cluster.nodes()]


@router.get("/nodes")
async def nodes(state: StateDep) -> list[dict[str, Any]]:
    return _nodes(state)


@router.get("/nodes/{name}")
async def node(name: str, state: StateDep) -> dict[str, Any]:
    for found in _nodes(state):
        if found["name"] == name:
            return found
    raise not_found()
