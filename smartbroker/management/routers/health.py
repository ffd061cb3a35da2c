"""/api/health/checks/* and /api/aliveness-test/{vhost}."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from smartbroker.management import ops
from smartbroker.management.authz import Refusal
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.models import Status
from smartbroker.management.routers.common import api_router
from smartbroker.message import Message

router = api_router()

ALIVENESS_QUEUE = "aliveness-test"


def _failed(reason: str, **details: Any) -> JSONResponse:
    """RabbitMQ's failed health check: 503 with a reason and what was found."""
    return JSONResponse(status_code=503, content={"status": "failed", "reason": reason, **details})


def _alarm_status(state: Any) -> Any:
    alarms = sorted(state.broker.alarms)
    if not alarms:
        return Status(status="ok")
    return _failed(f"resource alarm(s) in effect: {', '.join(alarms)}",
                   alarms=[{"resource": a, "node": state.node} for a in alarms])


@router.get("/health/checks/alarms", response_model=Status)
async def alarms(state: StateDep) -> Any:
    return _alarm_status(state)


@router.get("/health/checks/local-alarms", response_model=Status)
async def local_alarms(state: StateDep) -> Any:
    return _alarm_status(state)


@router.get("/health/checks/virtual-hosts", response_model=Status)
async def virtual_hosts() -> Status:
    return Status(status="ok")


@router.get("/healthchecks/node", response_model=Status)
async def node_health() -> Status:
    """RabbitMQ's older single health check (still used by many container healthchecks)."""
    return Status(status="ok")


@router.get("/health/checks/node-is-quorum-critical", response_model=Status)
@router.get("/health/checks/node-is-mirror-sync-critical", response_model=Status)
async def not_critical() -> Status:
    """One node: no quorum or mirror depends on this one alone."""
    return Status(status="ok")


def _listeners(state: Any) -> dict[str, int]:
    cfg = state.broker.config
    found = {"amqp": state.amqp_port or cfg.port, "http": state.http_port or cfg.management_port}
    if getattr(cfg, "tls_port", None) and getattr(cfg, "tls_cert", None):
        found["amqp/ssl"] = cfg.tls_port
    return found


@router.get("/health/checks/port-listener/{port}")
async def port_listener(port: int, state: StateDep) -> Any:
    ports = sorted(_listeners(state).values())
    if port in ports:
        return {"status": "ok", "port": port}
    return _failed("No active listener", missing=port, ports=ports)


@router.get("/health/checks/protocol-listener/{protocol}")
async def protocol_listener(protocol: str, state: StateDep) -> Any:
    listeners = _listeners(state)
    if protocol in listeners:
        return {"status": "ok", "protocol": protocol}
    return _failed("No active listener", missing=protocol, protocols=sorted(listeners))


@router.get("/aliveness-test/{vhost}")
async def aliveness(vhost: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """Declare a queue, publish to it and get the message back, as RabbitMQ does: as the
    caller, so with its permissions on that queue and the default exchange."""
    vh = lookup_vhost(state.broker, vhost)
    access = caller.amqp(vhost)
    access.check("configure", "queue", ALIVENESS_QUEUE, Refusal.REASON)
    access.check("write", "exchange", "", Refusal.REASON)
    access.check("read", "queue", ALIVENESS_QUEUE, Refusal.REASON)
    vh.declare_queue(ALIVENESS_QUEUE)
    ops.route(vh, Message.build("", ALIVENESS_QUEUE, b"test_message"))
    got = ops.get(vh, ALIVENESS_QUEUE, 1, "ack_requeue_false", "auto", None)
    if not got or got[0]["payload"] != "test_message":
        return {"status": "failed", "reason": "aliveness test message not received"}
    return {"status": "ok"}
