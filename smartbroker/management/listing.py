"""RabbitMQ's list options (``sort``, ``sort_reverse``, ``page``, ``page_size``, ``name``,
``use_regex``) for big lists, without stalling the broker.

The management API runs on the broker's event loop, so a list of 20k queues must not be
built in one loop pass: AMQP clients would wait for it. ``list_response`` therefore

* validates the parameters first (RabbitMQ's 400 texts), before any work;
* filters and orders the broker objects themselves (names are cheap), renders only the
  requested page unless a sort needs a rendered field, and renders, sorts and encodes
  in slices of ``CHUNK`` with ``await asyncio.sleep(0)`` between them;
* matches ``name`` with RE2 (linear time: ``^(a+)+$`` cannot backtrack), case-insensitive
  as RabbitMQ's ``re:run(..., [caseless])``; a pattern RE2 refuses (backreferences,
  look-around) is refused like an invalid one.

RabbitMQ's order is its default sort (vhost, then name) under any ``sort`` given;
missing sort values count as 0 and sort before everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import re2
from fastapi import Request, Response

from smartbroker.management.errors import ApiError, bad_request
from smartbroker.management.jsonio import dumps

CHUNK = 256
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
T = TypeVar("T")


@dataclass
class ListQuery:
    sort: list[str] | None
    reverse: bool
    page: int | None
    page_size: int
    name: str | None
    regex: Any  # re2 pattern, or None for a substring match


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise bad_request("Pagination parameters are invalid") from None


def parse_query(request: Request) -> ListQuery:
    params = request.query_params
    page, page_size = _int(params.get("page")), _int(params.get("page_size"))
    if page is not None and (page < 1 or (page_size is not None
                                          and not 0 < page_size <= MAX_PAGE_SIZE)):
        shown = "undefined" if page_size is None else page_size
        raise ApiError(400, "invalid_pagination_parameters",
                       f"Invalid pagination parameters: page number {page}, page size {shown}")
    name = params.get("name") or None
    use_regex = params.get("use_regex", "false")
    if use_regex not in ("true", "false"):
        raise bad_request("Pagination parameters are invalid")
    regex = None
    if name is not None and use_regex == "true":
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 8 << 20  # a pattern is a query parameter: bound what it may cost
        try:
            regex = re2.compile(name, options)
        except re2.error:
            raise bad_request("Pagination parameters are invalid") from None
    sort = params.get("sort")
    return ListQuery(sort=[s for s in sort.split(",") if s] if sort else None,
                     reverse=params.get("sort_reverse") == "true", page=page,
                     page_size=page_size or DEFAULT_PAGE_SIZE, name=name, regex=regex)


def _matches(query: ListQuery, name: str) -> bool:
    if query.regex is not None:
        return query.regex.search(name) is not None
    return query.name.lower() in name.lower()  # type: ignore[union-attr]


def dotted(doc: Any, path: str) -> Any:
    """``message_stats.publish`` in a rendered document; missing is 0, as in RabbitMQ."""
    value = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return 0
        value = value[part]
    return value


def order_key(value: Any) -> tuple[int, Any]:
    """A total order over JSON values (numbers < strings < everything else), so a sort
    by any key never compares an int with a str."""
    if isinstance(value, bool):
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if value is None:
        return (0, 0)
    return (2, dumps(value))


async def render_all(objects: list[T], render: Callable[[T], dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, obj in enumerate(objects):
        out.append(render(obj))
        if i % CHUNK == CHUNK - 1:
            await asyncio.sleep(0)
    return out


async def encode(value: Any) -> Response:
    """JSON for a (possibly long) list, encoded slice by slice."""
    items = value.get("items") if isinstance(value, dict) else value
    if not isinstance(items, list) or len(items) <= CHUNK:
        return Response(dumps(value), media_type="application/json")
    parts = []
    for start in range(0, len(items), CHUNK):
        parts.append(",".join(dumps(d) for d in items[start:start + CHUNK]))
        await asyncio.sleep(0)
    body = "[" + ",".join(parts) + "]"
    if isinstance(value, dict):
        head = dumps({k: v for k, v in value.items() if k != "items"})
        body = head[:-1] + ', "items": ' + body + "}"
    return Response(body, media_type="application/json")


async def list_response(request: Request, objects: Iterable[T],
                        render: Callable[[T], dict[str, Any]],
                        key: Callable[[T], Any] | None = None,
                        name: Callable[[T], str] | None = None) -> Response:
    """The JSON list RabbitMQ returns for ``objects`` under the request's list options.
    ``key`` is the default order (cheap, on the objects), ``name`` what ``name=`` matches."""
    query = parse_query(request)
    objs = list(objects)
    total = len(objs)
    if query.page is not None and query.name is not None and name is not None:
        kept = []
        for i, obj in enumerate(objs):
            if _matches(query, name(obj)):
                kept.append(obj)
            if i % (CHUNK * 8) == CHUNK * 8 - 1:
                await asyncio.sleep(0)
        objs = kept
    if key is not None:
        objs.sort(key=key)
    docs: list[dict[str, Any]] | None = None
    if query.sort == ["name"] and name is not None:
        objs.sort(key=name)  # stable: vhost order kept among equal names
    elif query.sort:
        docs = await render_all(objs, render)
        fields = query.sort
        docs.sort(key=lambda d: tuple(order_key(dotted(d, f)) for f in fields))
    seq: list[Any] = docs if docs is not None else objs
    if query.reverse:
        seq = seq[::-1]
    if query.page is None:
        return await encode(seq if docs is not None else await render_all(seq, render))
    size, filtered = query.page_size, len(seq)
    start = (query.page - 1) * size
    if start > filtered:
        raise ApiError(400, "page_out_of_range", f"Page out of range, page: {query.page} "
                                                 f"page size: {size}, len: {filtered}")
    window = seq[start:start + size]
    items = window if docs is not None else await render_all(window, render)
    return await encode({"filtered_count": filtered, "item_count": len(items), "items": items,
                         "page": query.page, "page_count": (filtered + size - 1) // size,
                         "page_size": size, "total_count": total})
