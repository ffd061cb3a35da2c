"""Definitions store: vhosts, users, permissions, exchanges, queues, bindings, policies.

SQLite from the standard library, written on every change (each save/delete is its own
transaction unless grouped with ``transaction()``); ``load_all`` rebuilds the broker's
state at startup. AMQP tables are stored as JSON with a type-preserving encoding (see
``encode_value``). Definitions change rarely, so the small blocking commit is acceptable.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from smartbroker.protocol import fields

_TAGS = ("$b", "$d", "$dec", "$ts")


def encode_value(v: Any) -> Any:
    """Map an AMQP value to plain JSON, tagging what JSON would lose (bytes, decimals...)."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, dict):
        body = {str(k): encode_value(x) for k, x in v.items()}
        if len(body) == 1 and next(iter(body)).startswith("$"):
            return {"$d": body}  # a real one-key dict that looks like a tag
        return body
    if isinstance(v, list | tuple):
        return [encode_value(x) for x in v]
    if isinstance(v, Decimal):
        return {"$dec": str(v)}
    if isinstance(v, dt.datetime):
        return {"$ts": v.isoformat()}
    raise TypeError(f"cannot store a {type(v).__name__} in a definition")


def decode_value(v: Any) -> Any:
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        (tag, x), = v.items()
        if tag == "$b":
            return base64.b64decode(x)
        if tag == "$d":
            return {k: decode_value(y) for k, y in x.items()}
        if tag == "$dec":
            return Decimal(x)
        if tag == "$ts":
            return dt.datetime.fromisoformat(x)
    return {k: decode_value(x) for k, x in v.items()}


JSON_DEPTH = 100  # deeper values are stored as an AMQP field table (see ``dumps``)


def dumps(v: Any) -> str:
    """JSON text for a definition value. Arguments nested deeper than ``JSON_DEPTH`` (a
    client may nest them as deep as a frame allows) are stored as the base64 of their
    AMQP table encoding, which is written and read without recursion; the JSON encoders
    and ``encode_value`` recurse."""
    if fields.depth(v) > JSON_DEPTH:
        raw = fields.encode_table({"v": v})
        return json.dumps({"$amqp": base64.b64encode(raw).decode("ascii")})
    return json.dumps(encode_value(v), sort_keys=True, separators=(",", ":"))


def loads(s: str) -> Any:
    value = json.loads(s)
    if isinstance(value, dict) and len(value) == 1 and "$amqp" in value:
        from smartbroker.protocol.codec import with_datetimes

        table, _ = fields.decode_table(base64.b64decode(value["$amqp"]))
        return with_datetimes(table)["v"]
    return decode_value(value)


@dataclass
class VHostDef:
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class UserDef:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)


@dataclass
class PermissionDef:
    user: str
    vhost: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@dataclass
class ExchangeDef:
    vhost: str
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueueDef:
    vhost: str
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    type: str = "classic"


@dataclass
class BindingDef:
    vhost: str
    source: str
    destination: str
    destination_type: str = "queue"  # or "exchange"
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyDef:
    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    apply_to: str = "all"


@dataclass
class Definitions:
    vhosts: list[VHostDef] = field(default_factory=list)
    users: list[UserDef] = field(default_factory=list)
    permissions: list[PermissionDef] = field(default_factory=list)
    exchanges: list[ExchangeDef] = field(default_factory=list)
    queues: list[QueueDef] = field(default_factory=list)
    bindings: list[BindingDef] = field(default_factory=list)
    policies: list[PolicyDef] = field(default_factory=list)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS vhosts (name TEXT PRIMARY KEY, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_limits (name TEXT PRIMARY KEY, limits TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_scram (name TEXT, mechanism TEXT, salt TEXT, iterations INTEGER,
  stored_key TEXT, server_key TEXT, PRIMARY KEY (name, mechanism));
CREATE TABLE IF NOT EXISTS permissions (user TEXT, vhost TEXT, configure TEXT, write TEXT, read TEXT,
  PRIMARY KEY (user, vhost));
CREATE TABLE IF NOT EXISTS topic_permissions (user TEXT, vhost TEXT, exchange TEXT, write TEXT,
  read TEXT, PRIMARY KEY (user, vhost, exchange));
CREATE TABLE IF NOT EXISTS exchanges (vhost TEXT, name TEXT, type TEXT, durable INTEGER, auto_delete INTEGER,
  internal INTEGER, arguments TEXT, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (vhost TEXT, name TEXT, durable INTEGER, auto_delete INTEGER,
  arguments TEXT, type TEXT, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (vhost TEXT, source TEXT, destination TEXT, destination_type TEXT,
  routing_key TEXT, arguments TEXT, PRIMARY KEY (vhost, source, destination, destination_type, routing_key, arguments));
CREATE TABLE IF NOT EXISTS policies (vhost TEXT, name TEXT, pattern TEXT, definition TEXT, priority INTEGER,
  apply_to TEXT, PRIMARY KEY (vhost, name));
"""


class DefinitionStore:
    """The broker's definitions, one SQLite file (``:memory:`` for tests)."""

    commits_later = False  # each change is committed before its writer returns

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several changes into one atomic commit (nests: the outermost commits)."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many independent changes in one commit: one fsync, not one each (CreateTopics of
        hundreds of topics). Unlike ``transaction`` nothing is rolled back: what the block
        wrote is committed even if it raises, as if each change had committed alone.
        Inside a transaction or batch, it joins it."""
        if self._depth:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    def pending(self) -> None:
        """Nothing to await: every change is committed before its writer returns."""
        return None

    def _run(self, sql: str, *args: Any) -> None:
        with self.transaction():
            self._db.execute(sql, args)

    # -- writers ---------------------------------------------------------------------

    def save_user_limits(self, name: str, limits: dict[str, int]) -> None:
        if limits:
            self._run("INSERT OR REPLACE INTO user_limits VALUES (?, ?)", name, dumps(limits))
        else:
            self._run("DELETE FROM user_limits WHERE name = ?", name)

    def load_user_limits(self) -> dict[str, dict[str, int]]:
        return {n: loads(v) for n, v in self._db.execute("SELECT * FROM user_limits")}

    def save_vhost(self, v: VHostDef) -> None:
        self._run("INSERT OR REPLACE INTO vhosts VALUES (?, ?)", v.name, dumps(v.metadata))

    def delete_vhost(self, name: str) -> None:
        """Drop the vhost and everything in it, as RabbitMQ does."""
        with self.transaction():
            for table in ("exchanges", "queues", "bindings", "policies", "permissions",
                          "topic_permissions"):
                self._db.execute(f"DELETE FROM {table} WHERE vhost = ?", (name,))
            self._db.execute("DELETE FROM vhosts WHERE name = ?", (name,))

    def save_user(self, u: UserDef) -> None:
        self._run("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", u.name, u.password_hash, dumps(u.tags))

    def save_user_scram(self, name: str, rows: dict[str, tuple[str, int, str, str]]) -> None:
        """Replace a user's SCRAM credentials (mechanism -> salt, iterations, keys)."""
        with self.transaction():
            self._db.execute("DELETE FROM user_scram WHERE name = ?", (name,))
            for mechanism, row in rows.items():
                self._db.execute("INSERT INTO user_scram VALUES (?, ?, ?, ?, ?, ?)",
                                 (name, mechanism, *row))

    def load_user_scram(self) -> dict[str, dict[str, tuple[str, int, str, str]]]:
        out: dict[str, dict[str, tuple[str, int, str, str]]] = {}
        for name, mechanism, *row in self._db.execute("SELECT * FROM user_scram"):
            out.setdefault(name, {})[mechanism] = tuple(row)  # type: ignore[assignment]
        return out

    def delete_user(self, name: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM user_scram WHERE name = ?", (name,))
            self._db.execute("DELETE FROM permissions WHERE user = ?", (name,))
            self._db.execute("DELETE FROM topic_permissions WHERE user = ?", (name,))
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))

    def save_permission(self, p: PermissionDef) -> None:
        self._run("INSERT OR REPLACE INTO permissions VALUES (?, ?, ?, ?, ?)",
                  p.user, p.vhost, p.configure, p.write, p.read)

    def delete_permission(self, user: str, vhost: str) -> None:
        self._run("DELETE FROM permissions WHERE user = ? AND vhost = ?", user, vhost)

    def save_topic_permission(self, p: dict[str, str]) -> None:
        self._run("INSERT OR REPLACE INTO topic_permissions VALUES (?, ?, ?, ?, ?)",
                  p["user"], p["vhost"], p["exchange"], p["write"], p["read"])

    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None:
        self._run("DELETE FROM topic_permissions WHERE user = ? AND vhost = ? AND exchange = ?",
                  user, vhost, exchange)

    def load_topic_permissions(self) -> list[dict[str, str]]:
        rows = self._db.execute("SELECT user, vhost, exchange, write, read FROM topic_permissions")
        return [dict(zip(("user", "vhost", "exchange", "write", "read"), row, strict=True))
                for row in rows]

    def save_exchange(self, e: ExchangeDef) -> None:
        self._run("INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)", e.vhost, e.name, e.type,
                  int(e.durable), int(e.auto_delete), int(e.internal), dumps(e.arguments))

    def delete_exchange(self, vhost: str, name: str) -> None:
        """Also drops bindings from it and to it."""
        with self.transaction():
            self._db.execute("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (vhost, name))
            self._db.execute("DELETE FROM bindings WHERE vhost = ? AND (source = ? OR "
                             "(destination = ? AND destination_type = 'exchange'))", (vhost, name, name))

    def save_queue(self, q: QueueDef) -> None:
        self._run("INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?, ?)", q.vhost, q.name,
                  int(q.durable), int(q.auto_delete), dumps(q.arguments), q.type)

    def delete_queue(self, vhost: str, name: str) -> None:
        """Also drops bindings to it."""
        with self.transaction():
            self._db.execute("DELETE FROM queues WHERE vhost = ? AND name = ?", (vhost, name))
            self._db.execute("DELETE FROM bindings WHERE vhost = ? AND destination = ? "
                             "AND destination_type = 'queue'", (vhost, name))

    def save_binding(self, b: BindingDef) -> None:
        self._run("INSERT OR IGNORE INTO bindings VALUES (?, ?, ?, ?, ?, ?)", b.vhost, b.source,
                  b.destination, b.destination_type, b.routing_key, dumps(b.arguments))

    def delete_binding(self, b: BindingDef) -> None:
        self._run("DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ? AND "
                  "destination_type = ? AND routing_key = ? AND arguments = ?", b.vhost, b.source,
                  b.destination, b.destination_type, b.routing_key, dumps(b.arguments))

    def save_policy(self, p: PolicyDef) -> None:
        self._run("INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?, ?, ?)", p.vhost, p.name,
                  p.pattern, dumps(p.definition), p.priority, p.apply_to)

    def delete_policy(self, vhost: str, name: str) -> None:
        self._run("DELETE FROM policies WHERE vhost = ? AND name = ?", vhost, name)

    # -- reading ---------------------------------------------------------------------

    def load_all(self) -> Definitions:
        q = self._db.execute
        return Definitions(
            vhosts=[VHostDef(n, loads(m)) for n, m in q("SELECT * FROM vhosts ORDER BY name")],
            users=[UserDef(n, h, loads(t)) for n, h, t in q("SELECT * FROM users ORDER BY name")],
            permissions=[PermissionDef(*r) for r in q("SELECT * FROM permissions ORDER BY user, vhost")],
            exchanges=[ExchangeDef(v, n, t, bool(d), bool(a), bool(i), loads(args))
                       for v, n, t, d, a, i, args in q("SELECT * FROM exchanges ORDER BY vhost, name")],
            queues=[QueueDef(v, n, bool(d), bool(a), loads(args), t)
                    for v, n, d, a, args, t in q("SELECT * FROM queues ORDER BY vhost, name")],
            bindings=[BindingDef(v, s, d, dt_, rk, loads(args)) for v, s, d, dt_, rk, args in
                      q("SELECT * FROM bindings ORDER BY vhost, source, destination, routing_key, "
                        "arguments")],
            policies=[PolicyDef(v, n, pat, loads(d), pr, ap)
                      for v, n, pat, d, pr, ap in q("SELECT * FROM policies ORDER BY vhost, name")],
        )

    def close(self) -> None:
        self._db.close()
