"""/api/exchanges[/{vhost}[/{name}]] and /api/exchanges/{vhost}/{name}/publish."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Request, Response

from smartbroker.errors import AMQPError
from smartbroker.management import ops
from smartbroker.management.deps import StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.formatting import properties_from_json
from smartbroker.management.models import ExchangeBody, PublishBody, PublishResult
from smartbroker.management.routers.common import api_router, exchange_name, paginate
from smartbroker.management.views import exchange_json
from smartbroker.message import Message

router = api_router()


@router.get("/exchanges")
async def list_exchanges(request: Request, state: StateDep) -> Any:
    return await paginate(request, [exchange_json(ex, vh) for vh in state.broker.vhosts.values()
                              for ex in vh.exchanges.values()])


@router.get("/exchanges/{vhost}")
async def vhost_exchanges(vhost: str, request: Request, state: StateDep) -> Any:
    vh = lookup_vhost(state.broker, vhost)
    return await paginate(request, [exchange_json(ex, vh) for ex in vh.exchanges.values()])


@router.get("/exchanges/{vhost}/{name}")
async def get_exchange(vhost: str, name: str, state: StateDep) -> dict[str, Any]:
    vh = lookup_vhost(state.broker, vhost)
    ex = vh.exchanges.get(exchange_name(name))
    if ex is None:
        raise not_found()
    return {**exchange_json(ex, vh), "incoming": [], "outgoing": []}  # per-peer rates: none kept


@router.put("/exchanges/{vhost}/{name}", status_code=201)
async def put_exchange(vhost: str, name: str, body: ExchangeBody, state: StateDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    from smartbroker.exchanges import EXCHANGE_TYPES

    if body.type not in EXCHANGE_TYPES:
        raise bad_request(f"invalid exchange type '{body.type}'")
    created = name not in vh.exchanges
    vh.declare_exchange(exchange_name(name), body.type, durable=body.durable,
                        auto_delete=body.auto_delete, internal=body.internal,
                        arguments=body.arguments)
    return Response(status_code=201 if created else 204)


@router.delete("/exchanges/{vhost}/{name}", status_code=204)
async def delete_exchange(vhost: str, name: str, request: Request, state: StateDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    name = exchange_name(name)
    if name not in vh.exchanges:
        raise not_found()
    vh.delete_exchange(name, if_unused=request.query_params.get("if-unused") == "true")
    return Response(status_code=204)


@router.post("/exchanges/{vhost}/{name}/publish", response_model=PublishResult)
async def publish(vhost: str, name: str, body: PublishBody, state: StateDep) -> PublishResult:
    vh = lookup_vhost(state.broker, vhost)
    if body.payload_encoding == "base64":
        try:
            payload = base64.b64decode(body.payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("payload is not valid base64") from None
    else:
        payload = body.payload.encode()
    msg = Message.build(exchange_name(name), body.routing_key, payload,
                        properties_from_json(body.properties))
    try:
        routed = ops.route(vh, msg)
    except AMQPError as err:  # RabbitMQ reports these as 400 with the AMQP reply text
        raise bad_request(f"{err.code} {err.reply_text}") from None
    return PublishResult(routed=routed)
