"""Broker objects as RabbitMQ's management JSON: AMQP values made JSON-safe, property keys."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

from pamqp import commands

from smartbroker.exchanges.base import freeze
from smartbroker.management.jsonio import jsonable

PROPERTY_NAMES = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
    "user_id", "app_id", "cluster_id",
)


def properties_json(props: commands.Basic.Properties) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PROPERTY_NAMES:
        value = getattr(props, name, None)
        if value is not None and not (name == "cluster_id" and value == ""):
            out[name] = jsonable(value)
    return out


def properties_from_json(data: Mapping[str, Any]) -> commands.Basic.Properties:
    """RabbitMQ's publish body ``properties`` object as pamqp properties (400 on junk)."""
    from smartbroker.management.errors import bad_request

    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in PROPERTY_NAMES:
            raise bad_request(f"unknown property '{key}'")
        if key == "timestamp" and isinstance(value, int | float):
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        elif key in ("delivery_mode", "priority"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad_request(f"property '{key}' must be an integer")
            if key == "delivery_mode" and value not in (1, 2):  # as over AMQP
                raise bad_request(f"406 PRECONDITION_FAILED - invalid message: "
                                  f"{{delivery_mode_unknown,{value}}}")
        elif key == "headers":
            if not isinstance(value, dict):
                raise bad_request("property 'headers' must be an object")
        elif key == "expiration" and isinstance(value, int):
            value = str(value)
        elif not isinstance(value, str):
            raise bad_request(f"property '{key}' must be a string")
        kwargs[key] = value
    try:
        return commands.Basic.Properties(**kwargs)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"invalid properties: {exc}") from None


def args_hash(arguments: Mapping[str, Any]) -> str:
    """A short stable token for a binding's arguments (RabbitMQ uses phash2; any hash works)."""
    canon = repr(freeze(dict(arguments)))  # flat: arguments may nest as deep as a frame allows
    digest = hashlib.sha256(canon.encode()).digest()[:4]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def properties_key(routing_key: str, arguments: Mapping[str, Any]) -> str:
    """RabbitMQ's ``properties_key``: ``~`` for empty, the quoted key, ``key~hash`` with args."""
    if not arguments:
        return quote_plus(routing_key) if routing_key else "~"
    return f"{quote_plus(routing_key)}~{args_hash(arguments)}"


def product_version() -> str:
    """smartbroker's version (from the package, else from its installed metadata)."""
    import smartbroker

    version = getattr(smartbroker, "__version__", None)
    if version:
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("smartbroker")
    except PackageNotFoundError:
        return "0+unknown"
