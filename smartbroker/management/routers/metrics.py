"""GET /metrics: Prometheus text format, no authentication (as RabbitMQ's plugin)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from smartbroker.management.metrics import render

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(render(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
