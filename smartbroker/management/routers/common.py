"""Shared router construction: authenticated, with percent-decoded path parameters."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from smartbroker.management.deps import DecodedRoute, authenticate, require_admin


def api_router(admin: bool = False) -> APIRouter:
    dep = require_admin if admin else authenticate
    return APIRouter(prefix="/api", route_class=DecodedRoute, dependencies=[Depends(dep)])


def exchange_name(name: str) -> str:
    """RabbitMQ names the default exchange ``amq.default`` in URLs."""
    return "" if name == "amq.default" else name
