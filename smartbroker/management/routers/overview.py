"""/api/overview, /api/whoami, /api/cluster-name (/api/nodes: routers/nodes.py)."""

from __future__ import annotations

from typing import Any

from smartbroker.exchanges import EXCHANGE_TYPES
from smartbroker.kafka.stats import listener_of
from smartbroker.management.deps import CallerDep, StateDep, UserDep
from smartbroker.management.formatting import product_version
from smartbroker.management.models import WhoAmI
from smartbroker.management.rates import OVERVIEW
from smartbroker.management.routers.common import api_router
from smartbroker.management.views import message_stats, open_connections

RABBITMQ_COMPAT_VERSION = "3.13.7"

router = api_router()


def _totals(state: Any, caller: Any) -> dict[str, Any]:
    """Object and message totals over what the caller may see: every vhost for monitoring
    users, else the vhosts it may log into and its own connections (as RabbitMQ)."""
    queues = exchanges = consumers = ready = unacked = 0
    for name, vhost in list(state.broker.vhosts.items()):
        if not (caller.is_monitor or caller.may_login(name)):
            continue
        exchanges += len(vhost.exchanges)
        for q in vhost.queues.values():
            queues += 1
            consumers += q.consumer_count
            ready += q.message_count
            unacked += q.unacked_count
    conns = [c for c in open_connections(state)
             if caller.sees_owner(getattr(getattr(c, "user", None), "name", None))]
    kafka = sum(1 for c in conns if getattr(c, "protocol", "") == "Kafka")
    return {
        "object_totals": {"connections": len(conns),
                          "channels": sum(len(c.channels) for c in conns),
                          "exchanges": exchanges, "queues": queues, "consumers": consumers},
        "queue_totals": {"messages": ready + unacked, "messages_ready": ready,
                         "messages_unacknowledged": unacked},
        # smartbroker's: object_totals counts both protocols' connections, as RabbitMQ's
        # counts AMQP, MQTT and STOMP ones alike; these split them
        "connection_totals": {"amqp": len(conns) - kafka, "kafka": kafka},
    }


def _kafka(state: Any, caller: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The Kafka listeners (RabbitMQ's ``listeners`` shape, protocol "kafka" and
    "kafka/ssl" as it says "amqp/ssl") and the Kafka summary: its vhost and, when the
    caller may see that vhost, the consumer groups Kafka clients see (ListGroups')."""
    listener = listener_of(state.broker)
    if listener is None:
        return [], None
    cfg = state.broker.config
    listeners = [{"node": state.node, "protocol": "kafka/ssl" if tls else "kafka",
                  "ip_address": cfg.host, "port": port}
                 for port, tls in getattr(listener, "ports", ())]
    vhost = listener.handlers.node.vhost
    groups = None
    if caller.is_monitor or caller.may_login(vhost):
        groups = len(listener.handlers.group_admin.view.group_ids())
    return listeners, {"vhost": vhost, "groups": groups}


@router.get("/overview")
async def overview(state: StateDep, caller: CallerDep) -> dict[str, Any]:
    cfg = state.broker.config
    listeners = [{"node": state.node, "protocol": "amqp", "ip_address": cfg.host,
                  "port": state.amqp_port or cfg.port},
                 {"node": state.node, "protocol": "http", "ip_address": cfg.host,
                  "port": state.http_port or cfg.management_port}]
    kafka_listeners, kafka = _kafka(state, caller)
    listeners += kafka_listeners
    return {
        "management_version": RABBITMQ_COMPAT_VERSION,
        "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
        "product_name": "smartbroker",
        "product_version": product_version(),
        "cluster_name": cluster_name_of(state),
        "node": state.node,
        "rates_mode": "basic",
        "disable_stats": False,
        "enable_queue_totals": True,
        "exchange_types": [{"name": n, "description": "", "enabled": True} for n in EXCHANGE_TYPES],
        "message_stats": message_stats(state.totals(), state.rates.of(OVERVIEW)),
        **_totals(state, caller),
        "listeners": listeners,
        **({"kafka": kafka} if kafka is not None else {}),
        "contexts": [{"node": state.node, "description": "RabbitMQ Management", "path": "/",
                      "port": str(state.http_port or cfg.management_port)}],
    }


@router.get("/whoami", response_model=WhoAmI)
async def whoami(user: UserDep) -> WhoAmI:
    return WhoAmI(name=user.name, tags=list(user.tags))


@router.get("/cluster-name")
async def cluster_name(state: StateDep) -> dict[str, str]:
    return {"name": cluster_name_of(state)}


def cluster_name_of(state: Any) -> str:
    """The cluster's name (``--cluster-name``) in cluster mode, else the node's, as RabbitMQ."""
    return getattr(state.cluster, "cluster_name", None) or state.node


@router.get("/extensions")
@router.get("/feature-flags")
@router.get("/global-parameters")
@router.get("/parameters")
async def nothing_here() -> list[Any]:
    """RabbitMQ endpoints for plugins, feature flags and runtime parameters: none here."""
    return []
