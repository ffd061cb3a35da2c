"""/api/exchanges[/{vhost}[/{name}]] and /api/exchanges/{vhost}/{name}/publish."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Request, Response

from smartbroker.errors import AMQPError
from smartbroker.management import ops
from smartbroker.management.authz import Refusal
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import bad_request, not_found
from smartbroker.management.formatting import properties_from_json
from smartbroker.management.models import ExchangeBody, PublishBody, PublishResult
from smartbroker.management.names import check_name, check_properties
from smartbroker.management.routers.common import (
    api_router,
    exchange_name,
    paginate,
    vhost_filter,
)
from smartbroker.management.views import exchange_json
from smartbroker.message import Message

router = api_router()


@router.get("/exchanges")
async def list_exchanges(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, [exchange_json(ex, vh)
                                    for vh in vhost_filter(caller, state.broker)
                                    for ex in list(vh.exchanges.values())])


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
async def put_exchange(vhost: str, name: str, body: ExchangeBody, state: StateDep,
                       caller: CallerDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    from smartbroker.exchanges import EXCHANGE_TYPES

    check_name("exchange", name)
    created = exchange_name(name) not in vh.exchanges
    caller.amqp(vhost).check_declare("exchange", exchange_name(name), body.arguments,
                                     not created)
    if body.type not in EXCHANGE_TYPES:
        raise bad_request(f"invalid exchange type '{body.type}'")
    vh.declare_exchange(exchange_name(name), body.type, durable=body.durable,
                        auto_delete=body.auto_delete, internal=body.internal,
                        arguments=body.arguments)
    return Response(status_code=201 if created else 204)


@router.delete("/exchanges/{vhost}/{name}", status_code=204)
async def delete_exchange(vhost: str, name: str, request: Request, state: StateDep,
                          caller: CallerDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    name = exchange_name(name)
    if name not in vh.exchanges:
        raise not_found()
    caller.amqp(vhost).check("configure", "exchange", name)
    vh.delete_exchange(name, if_unused=request.query_params.get("if-unused") == "true")
    return Response(status_code=204)


@router.post("/exchanges/{vhost}/{name}/publish", response_model=PublishResult)
async def publish(vhost: str, name: str, body: PublishBody, state: StateDep,
                  caller: CallerDep) -> PublishResult:
    """As basic.publish over a channel of the caller's: write on the exchange, topic
    permissions, then the properties (``user_id`` must be the caller's own name)."""
    vh = lookup_vhost(state.broker, vhost)
    access = caller.amqp(vhost)
    access.check("write", "exchange", exchange_name(name), Refusal.BAD)
    check_name("routing_key", body.routing_key)
    access.check_topic("write", vh.exchanges.get(exchange_name(name)), body.routing_key,
                       Refusal.BAD)
    check_properties(body.properties)
    user_id = body.properties.get("user_id")
    if isinstance(user_id, str) and user_id != caller.name:
        raise bad_request(f"406 PRECONDITION_FAILED - user_id property set to '{user_id}' but "
                          f"authenticated user was '{caller.name}'")
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
