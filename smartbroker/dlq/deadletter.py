"""Dead-lettering is an ordinary publish: record the death, re-address, route, drop cycles.

The ``x-death`` header is RabbitMQ's: a list of tables, newest first, one per
(queue, reason) pair, each with ``count``, ``reason``, ``queue``, ``time``, ``exchange``,
``routing-keys`` and (if the message had one) ``original-expiration``. BCC keys route
the copy but are never recorded. A repeat death for the same pair increments its count
and moves it to the front. ``x-first-death-*`` headers are set once; ``x-last-death-*``
on every death. The copy loses its ``expiration`` and ``BCC``. A target queue already in
the message's death history is a cycle and is skipped, unless a ``rejected`` death
happened within the cycle (a human decided to retry).

The message was published by someone else, so nothing here may fail on its contents:
the copy is made by splicing raw header entries (every other property and header stays
the publisher's bytes), and only ``CC``, ``BCC`` and ``x-death`` are decoded. As in
RabbitMQ, an ``x-death`` that is not an array is replaced; entries that are not tables
are dropped, and a ``count`` that is not an integer counts as absent.

Dead-letter chains (q1 -> q2 -> ... with TTL 0 or overflow) are run by a trampoline:
a dead-letter that happens while another is being routed is queued and routed after
it, so a chain of any length uses constant stack.
"""

from __future__ import annotations

import collections
import struct
import time
from collections.abc import Iterable
from typing import Any

from smartbroker.message import Message, routing_keys_in
from smartbroker.protocol import property_codec as pc
from smartbroker.protocol.fields import Malformed

REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
_FIRST = ("x-first-death-reason", "x-first-death-queue", "x-first-death-exchange")
_LAST = ("x-last-death-reason", "x-last-death-queue", "x-last-death-exchange")
_INT_TAGS = frozenset(b"bBsuIilL")
_pack_u32 = struct.Struct("!I").pack


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value


def _long(key: str, value: int) -> bytes:
    return pc.typed_entry(key, b"l", struct.pack("!q", max(min(value, 2**63 - 1), -(2**63))))


def _timestamp(key: str, seconds: int) -> bytes:
    return pc.typed_entry(key, b"T", struct.pack("!Q", seconds))


def _array_entry(key: str, elements: Iterable[bytes]) -> bytes:
    body = b"".join(elements)
    return pc.typed_entry(key, b"A", _pack_u32(len(body)) + body)


def _record_matches(record: dict[str, Any], queue_name: str, reason: str) -> bool:
    return _text(record.get("queue")) == queue_name and _text(record.get("reason")) == reason


def _bumped(element: bytes, record: dict[str, Any], now: int) -> bytes:
    """The matching x-death table with count + 1 and a new time, other entries as they were."""
    count = record.get("count")
    count = count + 1 if isinstance(count, int) and not isinstance(count, bool) else 1
    entries = [raw for key, raw in pc.table_entries(element[1:]) if key not in ("count", "time")]
    body = b"".join([_long("count", count), *entries, _timestamp("time", now)])
    return b"F" + _pack_u32(len(body)) + body


def _new_record(message: Message, queue_name: str, reason: str, routing_keys: list[str],
                expiration: bytes | None, now: int) -> bytes:
    entries = [_long("count", 1), pc.longstr_entry("exchange", message.exchange)]
    if expiration is not None:
        entries.append(pc.longstr_entry("original-expiration", expiration[1:]))
    entries += [pc.longstr_entry("queue", queue_name), pc.longstr_entry("reason", reason),
                _array_entry("routing-keys", (b"S" + _pack_u32(len(raw)) + raw for raw in
                                              (k.encode("utf-8", "surrogateescape") for k in routing_keys))),
                _timestamp("time", now)]
    body = b"".join(entries)
    return b"F" + _pack_u32(len(body)) + body


def _deaths(raw: bytes | None, queue_name: str, reason: str, now: int) -> tuple[list[bytes], bool]:
    """(raw x-death elements with the matching one bumped to the front, matched?)."""
    if raw is None:
        return [], False
    tag, value = pc.entry_value(raw)
    if tag != ord("A"):
        return [], False  # RabbitMQ: an x-death that is not an array is reset
    kept: list[bytes] = []
    bumped = None
    for element in pc.array_elements(value):
        if element[0] != ord("F"):
            continue  # not a table: no death record
        if bumped is None:
            record = pc.decode_value(element[0], element[1:])
            if _record_matches(record, queue_name, reason):
                bumped = _bumped(element, record, now)
                continue
        kept.append(element)
    if bumped is not None:
        return [bumped, *kept], True
    return kept, False


def with_death(message: Message, queue_name: str, reason: str,
               dlx: str, dlrk: str | None) -> tuple[Message, list[str]]:
    """The dead-lettered copy of ``message`` and the routing keys to route it with."""
    payload = message.header_payload
    raw_props = pc.split_properties(payload)
    raw_headers = raw_props.get("headers")
    entries = pc.table_entries(raw_headers) if raw_headers is not None else []
    by_key = dict(entries)

    def value(key: str) -> Any:
        entry = by_key.get(key)
        return None if entry is None else pc.decode_value(*pc.entry_value(entry))

    routing_keys = [message.routing_key, *routing_keys_in(value("CC"))]
    bcc_keys = routing_keys_in(value("BCC")) if "BCC" in by_key else (message.bcc or [])
    now = int(time.time())
    deaths, matched = _deaths(by_key.get("x-death"), queue_name, reason, now)
    if not matched:
        deaths.insert(0, _new_record(message, queue_name, reason, routing_keys,
                                     raw_props.get("expiration"), now))
    dropped = {"BCC", "x-death", *_LAST}
    if dlrk is not None:
        dropped.add("CC")
    kept = [raw for key, raw in entries if key not in dropped]
    kept.append(_array_entry("x-death", deaths))
    if "x-first-death-reason" not in by_key:
        kept += [pc.longstr_entry(key, text)
                 for key, text in zip(_FIRST, (reason, queue_name, message.exchange), strict=True)]
    kept += [pc.longstr_entry(key, text)
             for key, text in zip(_LAST, (reason, queue_name, message.exchange), strict=True)]
    header = pc.replace_properties(payload, {"headers": pc.join_table(kept), "expiration": None})
    keys = [dlrk] if dlrk is not None else routing_keys + bcc_keys
    dead = Message(dlx, keys[0], _shortstr(dlx) + _shortstr(keys[0]), header, message.body)
    return dead, keys


def _shortstr(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")[:255]
    return bytes((len(raw),)) + raw


def is_cycle(queue_name: str, deaths: Iterable[Any]) -> bool:
    """RabbitMQ's rule: the target queue appears in the history and no death up to and
    including that appearance was a reject."""
    cycle = []
    for death in deaths:
        if not isinstance(death, dict):
            continue
        cycle.append(death)
        if _text(death.get("queue")) == queue_name:
            return all(_text(d.get("reason")) != "rejected" for d in cycle)
    return False


class DeadLetters:
    """One vhost's dead-letter trampoline (see the module docstring): owned by the vhost,
    so two vhosts (or two tests) never share a queue of pending dead-letters."""

    __slots__ = ("vhost", "_pending", "_running")

    def __init__(self, vhost: Any) -> None:
        self.vhost = vhost
        self._pending: collections.deque[tuple[Message, str, str, str, str | None]] = \
            collections.deque()
        self._running = False

    def send(self, message: Message, queue_name: str, reason: str, dlx: str,
             dlrk: str | None) -> None:
        """Route the dead-lettered copy through the DLX (now, or after the dead-letter
        being routed when this one happened)."""
        self._pending.append((message, queue_name, reason, dlx, dlrk))
        if self._running:
            return
        self._running = True
        try:
            while self._pending:
                _route_dead_letter(self.vhost, *self._pending.popleft())
        finally:
            self._running = False  # on a bug, what is left is routed by the next dead-letter


def _route_dead_letter(vhost: Any, message: Message, queue_name: str, reason: str,
                       dlx: str, dlrk: str | None) -> int:
    dead, targets = dead_letter_targets(vhost, message, queue_name, reason, dlx, dlrk)
    if targets:
        vhost.enqueue(targets, dead)
    return len(targets)


def dead_letter_targets(vhost: Any, message: Message, queue_name: str, reason: str,
                        dlx: str, dlrk: str | None) -> tuple[Message, list[Any]]:
    """The dead-lettered copy and the queues it goes to, cycles left out; no queues when
    the DLX does not exist (RabbitMQ drops the message then) or the record is damaged.
    Also used by at-least-once dead-lettering (queues/quorum_dlx.py), which publishes
    the copy itself to await each target's confirm."""
    exchange = vhost.exchanges.get(dlx)
    if exchange is None:
        return message, []
    try:
        dead, keys = with_death(message, queue_name, reason, dlx, dlrk)
    except Malformed:
        return message, []  # a damaged record (validated messages always splice)
    targets = vhost.route(exchange, dead, keys)
    if not targets:
        return dead, []
    deaths = (dead.headers or {}).get("x-death") or []
    return dead, [queue for queue in targets if not is_cycle(queue.name, deaths)]
