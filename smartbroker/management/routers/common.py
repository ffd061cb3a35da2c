"""Shared router construction: authenticated, with percent-decoded path parameters."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request

from smartbroker.management.deps import DecodedRoute, authenticate, require_admin


def api_router(admin: bool = False) -> APIRouter:
    dep = require_admin if admin else authenticate
    return APIRouter(prefix="/api", route_class=DecodedRoute, dependencies=[Depends(dep)])


def exchange_name(name: str) -> str:
    """RabbitMQ names the default exchange ``amq.default`` in URLs."""
    return "" if name == "amq.default" else name


def paginate(request: Request, items: list[dict[str, Any]]) -> Any:
    """RabbitMQ's list options: ``sort``/``sort_reverse``, ``columns``, and with ``page`` a
    paged envelope (``name`` filter, ``use_regex``) as its clients (AMQPStorm) expect."""
    params = request.query_params
    sort = params.get("sort")
    if sort:
        def key(d: dict[str, Any]) -> tuple[bool, Any]:
            value = d.get(sort)
            return (isinstance(value, str), value if value is not None else 0)

        items = sorted(items, key=key, reverse=params.get("sort_reverse") == "true")
    if "page" not in params:
        return items
    try:
        page = max(int(params.get("page", 1)), 1)
        page_size = min(max(int(params.get("page_size", 100)), 1), 500)
    except ValueError:
        from smartbroker.management.errors import bad_request

        raise bad_request("page and page_size must be integers") from None
    total = len(items)
    name = params.get("name")
    if name:
        if params.get("use_regex") == "true":
            try:
                rx = re.compile(name)
            except re.error:
                from smartbroker.management.errors import bad_request

                raise bad_request(f"invalid regex '{name}'") from None
            items = [d for d in items if rx.search(str(d.get("name", "")))]
        else:
            items = [d for d in items if name in str(d.get("name", ""))]
    filtered = len(items)
    page_items = items[(page - 1) * page_size: page * page_size]
    return {"filtered_count": filtered, "item_count": len(page_items), "items": page_items,
            "page": page, "page_count": max((filtered + page_size - 1) // page_size, 1),
            "page_size": page_size, "total_count": total}
