"""/api/dlq[/{vhost}[/{queue}]] and /api/dlq/{vhost}/{queue}/redrive (smartbroker's own).

Browsing and redrive use ``smartbroker.dlq.tools``; both run in one event-loop step (no
``await`` inside), so a redrive batch is atomic with respect to the broker: a message leaves
the DLQ only once it has been routed again. Purging a DLQ is RabbitMQ's
``DELETE /api/queues/{vhost}/{queue}/contents``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field

from smartbroker.dlq import tools
from smartbroker.errors import not_found as amqp_not_found
from smartbroker.management.authz import Refusal
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.models import Body
from smartbroker.management.routers.common import api_router, paginate, vhost_filter
from smartbroker.management.views import queue_type

router = api_router()

MAX_INSPECT = 10_000
MAX_REDRIVE_BATCH = 100_000


class RedriveBody(Body):
    to_exchange: str | None = None
    limit: int | None = Field(default=None, ge=0, le=MAX_REDRIVE_BATCH)
    dry_run: bool = False


def _dead_letter_queue(state: Any, vhost: str, name: str) -> tuple[Any, Any]:
    vh = lookup_vhost(state.broker, vhost)
    q = vh.queues.get(name)
    if q is None:
        raise not_found()
    if not q.capabilities.supports_browse:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' is a {queue_type(q)} queue, "
                          f"not a dead-letter queue")
    return vh, q


def _dead_letter_targets(vh: Any) -> dict[str, set[str]]:
    """Queue name -> the queues whose dead letters can land in it (by DLX binding)."""
    sources: dict[str, set[str]] = {}
    for q in list(vh.queues.values()):
        target = q.dead_letter_target
        if target is None:
            continue
        dlx, dlrk = target
        if dlx == "":
            if dlrk:
                sources.setdefault(dlrk, set()).add(q.name)
            continue
        ex = vh.exchanges.get(dlx)
        if ex is None:
            continue
        for binding in ex.bindings.values():
            dest = binding.destination
            if dest in vh.queues.values():
                sources.setdefault(dest.name, set()).add(q.name)
    return sources


def _redrive_targets(q: Any, body: RedriveBody) -> set[str]:
    """The exchanges a redrive would publish to (the batch it would take)."""
    if body.to_exchange is not None:
        return {body.to_exchange}
    limit = body.limit if body.limit is not None else MAX_REDRIVE_BATCH
    targets = set()
    for i, entry in enumerate(list(q.ready)):
        if i >= limit:
            break
        death = tools.last_death(entry.message)
        if death is not None:
            name = death.get("exchange") or ""
            targets.add(name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name))
    return targets


def _head_has_death(q: Any) -> bool:
    if not q.capabilities.supports_browse:
        return False
    for entry in q.ready:
        return tools.last_death(entry.message) is not None
    return False


def _summary(vh: Any, q: Any, sources: set[str]) -> dict[str, Any]:
    head = next(iter(q.ready), None)
    oldest = tools.describe(0, head.message) if head is not None else None
    return {"name": q.name, "vhost": vh.name, "messages": q.message_count,
            "consumers": q.consumer_count, "dead_letter_sources": sorted(sources),
            "oldest": oldest.as_json() if oldest is not None else None}


def _list(vhosts: list[Any]) -> list[dict[str, Any]]:
    out = []
    for vh in vhosts:
        targets = _dead_letter_targets(vh)
        for q in list(vh.queues.values()):
            if not q.capabilities.supports_browse:
                continue
            if q.name in targets or _head_has_death(q):
                out.append(_summary(vh, q, targets.get(q.name, set())))
    return out


@router.get("/dlq")
async def list_dlqs(request: Request, state: StateDep, caller: CallerDep) -> Any:
    """Queues that receive dead letters (a DLX routes to them) or hold dead-lettered messages."""
    return await paginate(request, _list(vhost_filter(caller, state.broker)))


@router.get("/dlq/{vhost}")
async def vhost_dlqs(vhost: str, request: Request, state: StateDep) -> Any:
    return await paginate(request, _list([lookup_vhost(state.broker, vhost)]))


@router.get("/dlq/{vhost}/{queue}")
async def inspect_dlq(vhost: str, queue: str, state: StateDep, caller: CallerDep,
                      limit: int = 20) -> dict[str, Any]:
    """The first ``limit`` ready messages with their newest death, without consuming them
    (message contents: read permission on the queue, as a get would need)."""
    if not 0 <= limit <= MAX_INSPECT:
        raise bad_request(f"limit must be between 0 and {MAX_INSPECT}")
    _, q = _dead_letter_queue(state, vhost, queue)
    caller.amqp(vhost).check("read", "queue", q.name, Refusal.REASON)
    return {"name": q.name, "vhost": vhost, "messages": q.message_count,
            "items": [m.as_json() for m in tools.inspect(q, limit)]}


@router.post("/dlq/{vhost}/{queue}/redrive")
async def redrive_dlq(vhost: str, queue: str, body: RedriveBody, state: StateDep,
                      caller: CallerDep) -> dict[str, Any]:
    """Route messages back to where they died (or to ``to_exchange``), then remove them:
    a get from the DLQ and a publish to each target exchange, so read on the queue and
    write on every exchange a message would go to."""
    vh, q = _dead_letter_queue(state, vhost, queue)
    access = caller.amqp(vhost)
    access.check("read", "queue", q.name, Refusal.REASON)
    if body.to_exchange is not None and body.to_exchange not in vh.exchanges:
        raise amqp_not_found(f"no exchange '{body.to_exchange}' in vhost '{vhost}'")
    for target in _redrive_targets(q, body):
        access.check("write", "exchange", target, Refusal.BAD)
    result = tools.redrive(vh, q, to_exchange=body.to_exchange, limit=body.limit,
                           dry_run=body.dry_run)
    return {"moved": result.moved, "unroutable": result.unroutable,
            "skipped_no_death": result.skipped_no_death, "planned": result.planned,
            "dry_run": body.dry_run, "remaining": q.message_count}
