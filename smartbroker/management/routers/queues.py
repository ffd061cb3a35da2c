"""/api/queues[/{vhost}[/{name}]], /contents (purge) and /get."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.management import ops
from smartbroker.management.authz import Refusal
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.listing import list_response
from smartbroker.management.models import GetBody, QueueBody
from smartbroker.management.names import check_name
from smartbroker.management.routers.common import api_router, vhost_filter
from smartbroker.management.views import bindings_of, consumer_json, queue_json

router = api_router()


async def _queue(state: Any, vhost: str, name: str) -> tuple[Any, Any]:
    vh = lookup_vhost(state.broker, vhost)
    q = vh.queues.get(name)
    catch_up = state.broker.catch_up  # cluster: declared elsewhere a moment ago?
    if q is not None and catch_up is not None and catch_up.stand_in(vhost, name):
        await catch_up(vhost)  # its placement comes: the queue object follows it
        q = vh.queues.get(name)
    if q is None:
        raise not_found()
    return vh, q


async def _list(request: Request, state: Any, caller: Any, vhost: str | None) -> Any:
    queues = [q for vh in vhost_filter(caller, state.broker, vhost) for q in vh.queues.values()]
    return await list_response(request, queues, lambda q: queue_json(q, state),
                               key=lambda q: (q.vhost, q.name), name=lambda q: q.name)


@router.get("/queues")
async def list_queues(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await _list(request, state, caller, None)


@router.get("/queues/{vhost}")
async def vhost_queues(vhost: str, request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await _list(request, state, caller, vhost)


@router.get("/queues/{vhost}/{name}")
async def get_queue(vhost: str, name: str, state: StateDep) -> dict[str, Any]:
    """One queue, with RabbitMQ's detail fields: its consumers, per-source rates (none kept)."""
    q = (await _queue(state, vhost, name))[1]
    refresh = getattr(q, "refresh_quietly", None)  # led by another node: its counts
    if refresh is not None:
        await refresh()
    details = [consumer_json(c.channel.conn, c.channel, c) for c in q.consumers
               if isinstance(c, ChannelConsumer)]  # a channel's (not a test double's)
    return {**queue_json(q, state), "consumer_details": details, "incoming": [],
            "deliveries": [], "garbage_collection": {}}


@router.put("/queues/{vhost}/{name}", status_code=201)
async def put_queue(vhost: str, name: str, body: QueueBody, state: StateDep,
                    caller: CallerDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    check_name("queue", name)
    existing = vh.queues.get(name)
    caller.amqp(vhost).check_declare("queue", name, body.arguments, existing is not None)
    if existing is not None and existing.exclusive_owner is not None:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' is exclusive to another connection")
    _, created = vh.declare_queue(name, durable=body.durable, auto_delete=body.auto_delete,
                                  arguments=body.arguments)
    return Response(status_code=201 if created else 204)


@router.delete("/queues/{vhost}/{name}", status_code=204)
async def delete_queue(vhost: str, name: str, request: Request, state: StateDep,
                       caller: CallerDep) -> Response:
    vh, q = await _queue(state, vhost, name)
    caller.amqp(vhost).check("configure", "queue", name)
    refresh = getattr(q, "refresh_quietly", None)  # led by another node: its counts
    if refresh is not None:
        await refresh()
    params = request.query_params
    if params.get("if-unused") == "true" and q.consumer_count:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' in use")
    if params.get("if-empty") == "true" and q.message_count:
        raise bad_request(f"queue '{name}' in vhost '{vhost}' not empty")
    delete = getattr(q, "delete_remote", None)  # led by another node: deleted there
    if delete is not None:
        await delete()
    vh.drop_queue(q)  # the API may delete an exclusive queue, as RabbitMQ's does
    return Response(status_code=204)


@router.delete("/queues/{vhost}/{name}/contents", status_code=204)
async def purge_queue(vhost: str, name: str, state: StateDep, caller: CallerDep) -> Response:
    q = (await _queue(state, vhost, name))[1]
    caller.amqp(vhost).check("read", "queue", name)
    purge = getattr(q, "purge_remote", None)  # led by another node: purged there
    if purge is not None:
        await purge()
    else:
        q.purge()
    return Response(status_code=204)


@router.post("/queues/{vhost}/{name}/get")
async def get_messages(vhost: str, name: str, body: GetBody, state: StateDep,
                       caller: CallerDep) -> list[dict[str, Any]]:
    vh, q = await _queue(state, vhost, name)
    caller.amqp(vhost).check("read", "queue", name, Refusal.REASON)
    if hasattr(q, "get_remote"):  # led by another node: taken and settled there
        return await ops.get_remote(vh, q, body.count, body.ackmode, body.encoding,
                                    body.truncate)
    return ops.get(vh, q.name, body.count, body.ackmode, body.encoding, body.truncate)


@router.get("/queues/{vhost}/{name}/bindings")
async def queue_bindings(vhost: str, name: str, state: StateDep) -> list[dict[str, Any]]:
    vh, q = await _queue(state, vhost, name)
    return [b for b in bindings_of(vh) if b["destination_type"] == "queue"
            and b["destination"] == q.name]
