"""Where each definition lives in etcd, and its value: the key layout under ``defs/``.

    defs/vhosts/<vhost>                          VHostDef fields
    defs/users/<user>                            UserDef fields
    defs/user_limits/<user>                      {limit: value}
    defs/user_scram/<user>                       {mechanism: [salt, iterations, stored, server]}
    defs/permissions/<vhost>/<user>              PermissionDef fields
    defs/topic_permissions/<vhost>/<user>/<exchange>
    defs/exchanges/<vhost>/<name>                ExchangeDef fields
    defs/queues/<vhost>/<name>                   QueueDef fields
    defs/bindings/<vhost>/<source>/<destination type>/<destination>/<routing key>/<args hash>
    defs/policies/<vhost>/<name>

Every name is one percent-encoded segment (``_seg``), so no name can hold a ``/`` of the
layout: any vhost, queue or exchange name (AMQP names are arbitrary shortstr bytes) is
safe, and ``defs/<table>/<vhost>/`` is exactly one vhost's part of a table (a vhost delete
is a few prefix deletes). The vhost comes first wherever there is one for that reason.
A binding's identity includes its arguments, as in SQLite's primary key; the key carries
a hash of their JSON and the value the whole binding. Values are the JSON that
store/definitions.py writes (``dumps``/``loads``: AMQP tables round-trip exactly).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from smartbroker.store.definitions import (
    BindingDef,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
    dumps,
    loads,
)

ROOT = b"defs/"


def seg(name: str) -> bytes:
    """One key segment: every byte but [A-Za-z0-9_.~-] percent-encoded (no '/' left)."""
    return quote_from_bytes(name.encode("utf-8", "surrogateescape"), safe=b"").encode("ascii")


def unseg(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def key(table: str, *names: str) -> bytes:
    return ROOT + table.encode() + b"/" + b"/".join(seg(n) for n in names)


def prefix(table: str, *names: str) -> bytes:
    """The prefix of every key of ``table`` under ``names`` (e.g. one vhost's queues)."""
    return ROOT + table.encode() + b"/" + b"".join(seg(n) + b"/" for n in names)


def split(k: bytes) -> tuple[str, list[str]]:
    """``defs/<table>/<segments>`` -> (table, names)."""
    table, _, rest = k[len(ROOT):].partition(b"/")
    return table.decode(), [unseg(s) for s in rest.split(b"/")]


def args_hash(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(arguments).encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Entry:
    """One definition as etcd holds it."""
    key: bytes
    value: bytes


def _fields(record: Any) -> bytes:
    return dumps(dataclasses.asdict(record)).encode()


def vhost(v: VHostDef) -> Entry:
    return Entry(key("vhosts", v.name), _fields(v))


def user(u: UserDef) -> Entry:
    return Entry(key("users", u.name), _fields(u))


def user_limits(name: str, limits: dict[str, int]) -> Entry:
    return Entry(key("user_limits", name), dumps(limits).encode())


def user_scram(name: str, rows: dict[str, tuple[str, int, str, str]]) -> Entry:
    return Entry(key("user_scram", name), dumps({m: list(r) for m, r in rows.items()}).encode())


def permission(p: PermissionDef) -> Entry:
    return Entry(key("permissions", p.vhost, p.user), _fields(p))


def topic_permission(p: dict[str, str]) -> Entry:
    record = {f: p[f] for f in ("user", "vhost", "exchange", "write", "read")}
    return Entry(key("topic_permissions", p["vhost"], p["user"], p["exchange"]),
                 dumps(record).encode())


def exchange(e: ExchangeDef) -> Entry:
    return Entry(key("exchanges", e.vhost, e.name), _fields(e))


@dataclass
class ExclusiveQueueDef(QueueDef):
    """An exclusive queue as the other nodes know it (on its node's lease): its owning
    node and connection, so they answer 405 RESOURCE_LOCKED and route publishes to it."""
    exclusive_node: str = ""
    exclusive_connection: str = ""


def queue(q: QueueDef) -> Entry:
    return Entry(key("queues", q.vhost, q.name), _fields(q))


def binding_key(b: BindingDef) -> bytes:
    return key("bindings", b.vhost, b.source, b.destination_type, b.destination, b.routing_key,
               args_hash(b.arguments))


def binding(b: BindingDef) -> Entry:
    return Entry(binding_key(b), _fields(b))


def policy(p: PolicyDef) -> Entry:
    return Entry(key("policies", p.vhost, p.name), _fields(p))


_RECORDS: dict[str, type] = {"vhosts": VHostDef, "users": UserDef, "permissions": PermissionDef,
                             "exchanges": ExchangeDef, "queues": QueueDef,
                             "bindings": BindingDef, "policies": PolicyDef}


def decode(k: bytes, value: bytes) -> tuple[str, Any]:
    """(table, record): a dataclass, ``(user, limits)``, ``(user, scram rows)`` or a topic
    permission dict. ValueError for a key or value this version cannot read."""
    table, names = split(k)
    try:
        data = loads(value.decode())
        if table == "queues" and "exclusive_node" in data:
            return table, ExclusiveQueueDef(**data)
        if table in _RECORDS:
            return table, _RECORDS[table](**data)
        if table == "user_limits":
            return table, (names[0], data)
        if table == "user_scram":
            return table, (names[0], {m: tuple(r) for m, r in data.items()})
        if table == "topic_permissions":
            return table, dict(data)
    except (TypeError, KeyError, IndexError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"unreadable definition {k!r}: {exc}") from None
    raise ValueError(f"unknown definition table {table!r}")
