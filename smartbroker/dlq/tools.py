"""Operator tools for dead-letter queues: inspect, redrive, purge.

Redrive sends each message back to where it died: the exchange and routing keys of its
newest ``x-death`` record (or an exchange the operator names). A message leaves the DLQ
only after it has been routed again, in the same event-loop step, so an interruption
loses nothing; a message that routes nowhere stays in the DLQ.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from smartbroker.message import Message
from smartbroker.protocol.fields import Timestamp


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass
class DeadMessage:
    position: int
    reason: str | None
    queue: str | None
    exchange: str | None
    routing_keys: list[str]
    count: int
    time: str | None
    deaths: int
    body_preview: str
    body_size: int
    headers: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "headers"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def last_death(message: Message) -> dict[str, Any] | None:
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return None


def describe(position: int, message: Message, preview: int = 80) -> DeadMessage:
    death = last_death(message) or {}
    when = death.get("time")
    if isinstance(when, Timestamp):
        when = when.as_datetime()
    if isinstance(when, datetime.datetime):
        when = when.replace(tzinfo=datetime.UTC).isoformat()
    body = message.body[:preview].decode("utf-8", errors="replace")
    return DeadMessage(
        position=position,
        reason=_text(death.get("reason")),
        queue=_text(death.get("queue")),
        exchange=_text(death.get("exchange")),
        routing_keys=[_text(k) for k in _list(death.get("routing-keys"))],
        count=death["count"] if type(death.get("count")) is int else 0,
        time=when if isinstance(when, str) else None,
        deaths=len((message.headers or {}).get("x-death") or []),
        body_preview=body,
        body_size=len(message.body),
    )


def inspect(queue: Any, limit: int = 20) -> list[DeadMessage]:
    """Browse the first ``limit`` ready messages without consuming them."""
    out = []
    for position, entry in enumerate(_entries(queue)):
        if position >= limit:
            break
        out.append(describe(position, entry.message))
    return out


def _entries(queue: Any) -> Iterator[Any]:
    return iter(queue.ready)


@dataclass
class RedriveResult:
    moved: int = 0
    unroutable: int = 0
    skipped_no_death: int = 0
    planned: list[dict[str, Any]] = field(default_factory=list)


def redrive(vhost: Any, queue: Any, *, to_exchange: str | None = None, limit: int | None = None,
            dry_run: bool = False, progress: Callable[[int], None] | None = None) -> RedriveResult:
    """Move dead-lettered messages back to where they died (or to ``to_exchange``)."""
    result = RedriveResult()
    candidates = list(_entries(queue))
    if limit is not None:
        candidates = candidates[:limit]
    for entry in candidates:
        message = entry.message
        death = last_death(message)
        if to_exchange is None and death is None:
            result.skipped_no_death += 1
            continue
        exchange_name = to_exchange if to_exchange is not None else _text(death.get("exchange")) or ""
        keys = ([_text(k) for k in death.get("routing-keys") or []] if death else []) or [message.routing_key]
        if dry_run:
            result.planned.append({"exchange": exchange_name, "routing_keys": keys})
            continue
        exchange = vhost.exchanges.get(exchange_name)
        republished = message.with_properties(message.properties, exchange=exchange_name,
                                              routing_key=keys[0])
        targets = (vhost.route(exchange, republished, keys) if exchange is not None else set())
        targets.discard(queue)
        if not targets:
            result.unroutable += 1
            continue
        vhost.enqueue(targets, republished)
        queue.ready.remove(entry)  # only now: it has been routed again
        queue.settle_removed(entry)
        result.moved += 1
        if progress is not None:
            progress(1)
    return result
