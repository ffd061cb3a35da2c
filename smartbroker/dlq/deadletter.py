"""Dead-lettering is an ordinary publish: record the death, re-address, route, drop cycles.

The ``x-death`` header is RabbitMQ's: a list of tables, newest first, one per
(queue, reason) pair, each with ``count``, ``reason``, ``queue``, ``time``, ``exchange``,
``routing-keys`` and (if the message had one) ``original-expiration``. BCC keys route the copy but are never recorded. A repeat death for
the same pair increments its count and moves it to the front. ``x-first-death-*`` headers
are set once; ``x-last-death-*`` on every death. The copy loses its ``expiration`` and
``BCC``. A target queue already in the message's death history is a cycle and is skipped,
unless a ``rejected`` death happened within the cycle (a human decided to retry).
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable
from typing import Any

from smartbroker.message import Message

REASONS = ("rejected", "expired", "maxlen", "delivery_limit")


def original_routing_keys(message: Message, headers: dict[str, Any]) -> list[str]:
    keys = [message.routing_key]
    cc = headers.get("CC")
    if isinstance(cc, list):
        keys += [k.decode() if isinstance(k, bytes) else str(k) for k in cc]
    return keys


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def with_death(message: Message, queue_name: str, reason: str,
               dlx: str, dlrk: str | None) -> tuple[Message, list[str]]:
    """The dead-lettered copy of ``message`` and the routing keys to route it with."""
    props = copy.copy(message.properties)
    headers: dict[str, Any] = dict(props.headers or {})
    routing_keys = original_routing_keys(message, headers)
    bcc = headers.pop("BCC", None)
    bcc_keys = [_text(k) for k in bcc] if isinstance(bcc, list) else (message.bcc or [])
    route_keys = routing_keys + bcc_keys
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    existing = None
    for death in deaths:
        if _text(death.get("queue")) == queue_name and _text(death.get("reason")) == reason:
            existing = death
            break
    if existing is not None:
        deaths.remove(existing)
        record = dict(existing)
        record["count"] = int(record.get("count", 1)) + 1
        record["time"] = now
    else:
        record = {"count": 1, "reason": reason, "queue": queue_name, "time": now,
                  "exchange": message.exchange, "routing-keys": routing_keys}
        if props.expiration is not None:
            record["original-expiration"] = props.expiration
    headers["x-death"] = [record, *deaths]
    if "x-first-death-reason" not in headers:
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue_name
        headers["x-first-death-exchange"] = message.exchange
    headers["x-last-death-reason"] = reason
    headers["x-last-death-queue"] = queue_name
    headers["x-last-death-exchange"] = message.exchange
    props.headers = headers
    props.expiration = None
    keys = [dlrk] if dlrk is not None else route_keys
    if dlrk is not None:
        headers.pop("CC", None)
    return message.with_properties(props, exchange=dlx, routing_key=keys[0]), keys


def is_cycle(queue_name: str, deaths: Iterable[dict[str, Any]]) -> bool:
    """RabbitMQ's rule: the target queue appears in the history and no death up to and
    including that appearance was a reject."""
    cycle = []
    for death in deaths:
        cycle.append(death)
        if _text(death.get("queue")) == queue_name:
            return all(_text(d.get("reason")) != "rejected" for d in cycle)
    return False


def dead_letter(vhost: Any, message: Message, queue_name: str, reason: str,
                dlx: str, dlrk: str | None) -> int:
    """Route the dead-lettered copy through the DLX; returns how many queues took it."""
    exchange = vhost.exchanges.get(dlx)
    if exchange is None:
        return 0  # RabbitMQ drops the message when the DLX does not exist
    dead, keys = with_death(message, queue_name, reason, dlx, dlrk)
    targets = vhost.route(exchange, dead, keys)
    if not targets:
        return 0
    deaths = dead.properties.headers["x-death"]
    targets = [queue for queue in targets if not is_cycle(queue.name, deaths)]
    if targets:
        vhost.enqueue(targets, dead)
    return len(targets)
