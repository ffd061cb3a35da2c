"""/api/definitions[/{vhost}]: GET exports, POST imports (administrator only)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response

from smartbroker.management import definitions
from smartbroker.management.deps import StateDep, lookup_vhost
from smartbroker.management.errors import bad_request
from smartbroker.management.routers.common import api_router

router = api_router()


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("not_json") from None


@router.get("/definitions")
async def export_all(state: StateDep) -> dict[str, Any]:
    return definitions.export(state)


@router.post("/definitions", status_code=204)
async def import_all(request: Request, state: StateDep) -> Response:
    definitions.import_(state, await _body(request))
    return Response(status_code=204)


@router.get("/definitions/{vhost}")
async def export_vhost(vhost: str, state: StateDep) -> dict[str, Any]:
    lookup_vhost(state.broker, vhost)
    return definitions.export(state, vhost)


@router.post("/definitions/{vhost}", status_code=204)
async def import_vhost(vhost: str, request: Request, state: StateDep) -> Response:
    lookup_vhost(state.broker, vhost)
    definitions.import_(state, await _body(request), vhost)
    return Response(status_code=204)
