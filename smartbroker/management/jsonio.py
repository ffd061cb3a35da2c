"""JSON for values a client chose: AMQP tables of any depth, without recursion.

Message headers, queue arguments and client properties are nested as deep as a frame
allows (RabbitMQ accepts and shows tables hundreds of levels deep). The standard
encoders recurse (``json.dumps`` and FastAPI's ``jsonable_encoder``) or stop at a depth
limit (pydantic), so one deep header turned a management ``get`` into a 500. Here both
the AMQP -> JSON conversion (``jsonable``) and the encoding (``dumps``) keep an explicit
stack, and every route of the API renders through ``DeepJSONResponse``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse

from smartbroker.protocol.fields import Timestamp

_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def scalar(value: Any) -> Any:
    """One non-container AMQP value as a JSON value (bytes as text when UTF-8, else
    base64; decimals as numbers; timestamps as epoch seconds, as RabbitMQ shows them)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Timestamp):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, dt.datetime):
        return int(value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp())
    return str(value)


def _children(value: Any) -> Iterator[tuple[Any, Any]] | None:
    """(key or None, child) pairs of a container, or None for a scalar."""
    if isinstance(value, Mapping):
        return ((_key(k), v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return ((None, v) for v in value)
    return None


def _key(key: Any) -> str:
    """A table key as JSON text: keys that were not UTF-8 on the wire (kept as surrogates
    by ``fields.key_text``) show with replacement characters."""
    text = str(key)
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def jsonable(value: Any) -> Any:
    """``value`` with every leaf converted by ``scalar``, at any depth."""
    items = _children(value)
    if items is None:
        return scalar(value)
    root: Any = {} if isinstance(value, Mapping) else []
    stack = [(items, root)]
    while stack:
        items, out = stack[-1]
        for key, child in items:
            sub = _children(child)
            converted: Any = scalar(child) if sub is None else (
                {} if isinstance(child, Mapping) else [])
            if key is None:
                out.append(converted)
            else:
                out[key] = converted
            if sub is not None:
                stack.append((sub, converted))
                break
        else:
            stack.pop()
    return root


def dumps(value: Any) -> str:
    """JSON text of ``value`` (converted as ``jsonable`` does), at any depth."""
    parts: list[str] = []
    stack: list[list[Any]] = []  # [children iterator, closing bracket, first?]

    def emit(item: Any) -> None:
        sub = _children(item)
        if sub is None:
            parts.append(json.dumps(scalar(item)))
        else:
            is_map = isinstance(item, Mapping)
            parts.append("{" if is_map else "[")
            stack.append([sub, "}" if is_map else "]", True])

    emit(value)
    while stack:
        top = stack[-1]
        pair = next(top[0], None)
        if pair is None:
            parts.append(top[1])
            stack.pop()
            continue
        if not top[2]:
            parts.append(",")
        top[2] = False
        key, child = pair
        if key is not None:
            parts.append(_string(key) + ":")
        emit(child)
    return "".join(parts)


class DeepJSONResponse(JSONResponse):
    """The API's response class: ``dumps`` instead of the recursive encoders."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()
