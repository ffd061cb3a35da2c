"""/api/bindings[/{vhost}] and the e/q, e/e binding resources."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote, unquote_plus

from fastapi import Request, Response

from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import ApiError, not_found
from smartbroker.management.formatting import properties_key
from smartbroker.management.listing import list_response
from smartbroker.management.models import BindingBody
from smartbroker.management.names import check_name
from smartbroker.management.routers.common import api_router, exchange_name, vhost_filter
from smartbroker.management.views import BindingRow, binding_json, binding_rows, bindings_of

router = api_router()
Kind = Literal["q", "e"]
KIND_NAMES = {"q": "queue", "e": "exchange"}


@router.get("/bindings")
async def list_bindings(request: Request, state: StateDep, caller: CallerDep) -> Any:
    rows = [row for vh in vhost_filter(caller, state.broker) for row in binding_rows(vh)]
    return await list_response(request, rows, _render)


@router.get("/bindings/{vhost}")
async def vhost_bindings(vhost: str, request: Request, state: StateDep) -> Any:
    return await list_response(request, binding_rows(lookup_vhost(state.broker, vhost)), _render)


def _render(row: BindingRow) -> dict[str, Any]:
    return binding_json(*row)


def _ends(state: Any, vhost: str, source: str, kind: Kind, dest: str) -> tuple[Any, Any, Any]:
    vh = lookup_vhost(state.broker, vhost)
    src = vh.exchanges.get(exchange_name(source))
    target = vh.queues.get(dest) if kind == "q" else vh.exchanges.get(exchange_name(dest))
    if src is None:
        raise ApiError(404, "not_found", f"no exchange '{source}' in vhost '{vhost}'")
    if target is None:
        raise ApiError(404, "not_found",
                       f"no {KIND_NAMES[kind]} '{dest}' in vhost '{vhost}'")
    return vh, src, target


def _between(state: Any, vhost: str, source: str, kind: Kind, dest: str) -> list[dict[str, Any]]:
    vh, src, target = _ends(state, vhost, source, kind, dest)
    return [b for b in bindings_of(vh) if b["source"] == src.name
            and b["destination_type"] == KIND_NAMES[kind] and b["destination"] == target.name]


@router.get("/bindings/{vhost}/e/{source}/{kind}/{dest}")
async def get_bindings(vhost: str, source: str, kind: Kind, dest: str,
                 state: StateDep) -> list[dict[str, Any]]:
    found = _between(state, vhost, source, kind, dest)
    if not found and state.broker.catch_up is not None:  # cluster: bound elsewhere just now?
        await state.broker.catch_up(vhost)
        found = _between(state, vhost, source, kind, dest)
    return found


@router.post("/bindings/{vhost}/e/{source}/{kind}/{dest}", status_code=201)
async def create_binding(vhost: str, source: str, kind: Kind, dest: str, body: BindingBody,
                         state: StateDep, caller: CallerDep) -> Response:
    vh, src, target = _ends(state, vhost, source, kind, dest)
    _check_bind(caller, vhost, src, kind, target, body.routing_key)
    check_name("routing_key", body.routing_key)
    vh.bind(src.name, target, body.routing_key, body.arguments)
    key = properties_key(body.routing_key, body.arguments)
    return Response(status_code=201, headers={"Location": quote(key, safe="~")})


def _check_bind(caller: Any, vhost: str, src: Any, kind: Kind, target: Any,
                routing_key: str) -> None:
    """queue.bind / exchange.bind as RabbitMQ checks them: write on the destination, read
    on the source, topic read permission on the key."""
    access = caller.amqp(vhost)
    access.check("write", KIND_NAMES[kind], target.name)
    access.check("read", "exchange", src.name)
    access.check_topic("read", src, routing_key)


def _matches(binding: dict[str, Any], props: str) -> bool:
    key = binding["properties_key"]
    return props in (key, unquote_plus(key)) or (
        not binding["arguments"] and props == binding["routing_key"])


@router.get("/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}")
async def get_binding(vhost: str, source: str, kind: Kind, dest: str, props: str,
                state: StateDep) -> dict[str, Any]:
    for b in _between(state, vhost, source, kind, dest):
        if _matches(b, props):
            return b
    raise not_found()


@router.delete("/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}", status_code=204)
async def delete_binding(vhost: str, source: str, kind: Kind, dest: str, props: str,
                         state: StateDep, caller: CallerDep) -> Response:
    vh = lookup_vhost(state.broker, vhost)
    src = vh.exchanges.get(exchange_name(source))
    target = vh.queues.get(dest) if kind == "q" else vh.exchanges.get(exchange_name(dest))
    if src is None or target is None:
        raise not_found()
    for binding in list(src.bindings.values()):
        if binding.destination is not target:
            continue
        doc = {"properties_key": properties_key(binding.routing_key, binding.arguments),
               "arguments": binding.arguments, "routing_key": binding.routing_key}
        if _matches(doc, props):
            _check_bind(caller, vhost, src, kind, target, binding.routing_key)
            vh.unbind(src.name, target, binding.routing_key, binding.arguments)
            return Response(status_code=204)
    raise not_found()


def _exchange_bindings(state: Any, vhost: str, name: str, side: str) -> list[dict[str, Any]]:
    vh = lookup_vhost(state.broker, vhost)
    ex_name = exchange_name(name)  # RabbitMQ answers [] for a missing exchange, not 404
    if side == "source":
        return [b for b in bindings_of(vh) if b["source"] == ex_name]
    return [b for b in bindings_of(vh) if b["destination_type"] == "exchange"
            and b["destination"] == ex_name]


@router.get("/exchanges/{vhost}/{name}/bindings/source")
async def exchange_source_bindings(vhost: str, name: str, state: StateDep) -> list[dict[str, Any]]:
    """Bindings in which the exchange is the source (RabbitMQ's path)."""
    return _exchange_bindings(state, vhost, name, "source")


@router.get("/exchanges/{vhost}/{name}/bindings/destination")
async def exchange_destination_bindings(vhost: str, name: str,
                                        state: StateDep) -> list[dict[str, Any]]:
    """Bindings in which the exchange is the destination (exchange-to-exchange)."""
    return _exchange_bindings(state, vhost, name, "destination")
