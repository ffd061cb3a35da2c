"""/api/queues[/{vhost}[/{name}]], /contents (purge) and /get."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.management import ops
from smartbroker.management.deps import StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.models import GetBody, QueueBody
from smartbroker.management.routers.common import api_router, paginate
from smartbroker.management.views import bindings_of, consumer_json, queue_json

router = api_router()


def _queue(state: Any, vhost: str, name: str) -> tuple[Any, Any]:
    vh = lookup_vhost(state.broker, vhost)
    q = vh.queues.get(name)
    if q is None:
        raise not_found()
    return vh, q


@router.get("/queues")
async def list_queues(request: Request, state: StateDep) -> Any:
    return paginate(request, [queue_json(q, state) for vh in state.broker.vhosts.values()
                              for q in list(vh.queues.values())])


@router.get("/queues/{vhost}")
async def vhost_queues(vhost: str, request: Request, state: StateDep) -> Any:
    vh = lookup_vhost(state.broker, vhost)
    return paginate(request, [queue_json(q, state) for q in list(vh.queues.values())])


@router.get("/queues/{vhost}/{name}")
async def get_queue(vhost: str, name: str, state: StateDep) -> dict[str, Any]:
    """One queue, with RabbitMQ's detail fields: its consumers, per-source rates (none kept)."""
    q = _queue(state, vhost, name)[1]
    details = [consumer_json(c.channel.conn, c.channel, c) for c in getattr(q, "consumers", ())
               if hasattr(c, "channel")]
    return {**queue_json(q, state), "consumer_details": details, "incoming": [],
            "deliveries": [], "garbage_collection": {}}


@router.put("/queues/{vhost}/{name}", status_code=201)
async def put_queue(vhost: str, name: str, body: QueueBody, state: StateDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    existing = vh.queues.get(name)
    if existing is not None and existing.exclusive_owner is not None:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' is exclusive to another connection")
    _, created = vh.declare_queue(name, durable=body.durable, auto_delete=body.auto_delete,
                                  arguments=body.arguments)
    return Response(status_code=201 if created else 204)


@router.delete("/queues/{vhost}/{name}", status_code=204)
async def delete_queue(vhost: str, name: str, request: Request, state: StateDep) -> Response:
    vh, q = _queue(state, vhost, name)
    params = request.query_params
    if params.get("if-unused") == "true" and q.consumer_count:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' in use")
    if params.get("if-empty") == "true" and q.message_count:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' not empty")
    vh.drop_queue(q)  # the API may delete an exclusive queue, as RabbitMQ's does
    return Response(status_code=204)


@router.delete("/queues/{vhost}/{name}/contents", status_code=204)
async def purge_queue(vhost: str, name: str, state: StateDep) -> Response:
    _queue(state, vhost, name)[1].purge()
    return Response(status_code=204)


@router.post("/queues/{vhost}/{name}/get")
async def get_messages(vhost: str, name: str, body: GetBody, state: StateDep) -> list[dict[str, Any]]:
    vh, q = _queue(state, vhost, name)
    return ops.get(vh, q.name, body.count, body.ackmode, body.encoding, body.truncate)


@router.get("/queues/{vhost}/{name}/bindings")
async def queue_bindings(vhost: str, name: str, state: StateDep) -> list[dict[str, Any]]:
    vh, q = _queue(state, vhost, name)
    return [b for b in bindings_of(vh) if b["destination_type"] == "queue"
            and b["destination"] == q.name]
