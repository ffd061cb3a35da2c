"""Per-vhost permissions: three regexes (configure, write, read) per user, as RabbitMQ.

Which operation needs which permission on which resource is RabbitMQ's table:
configure for declare/delete, write for publishing into an exchange and for the queue
(or destination exchange) side of a bind, read for consuming/getting/purging and for the
exchange (or source) side of a bind. The default exchange is checked as ``amq.default``.

Topic permissions (RabbitMQ's topic authorisation) add two regexes per user, vhost and
topic exchange: ``write`` for the routing key of a publish, ``read`` for the routing key of
a bind from that exchange. ``{username}`` and ``{vhost}`` in them are expanded. No entry
for an exchange means no topic restriction.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from smartbroker.errors import access_refused

Kind = Literal["configure", "write", "read"]


class InvalidRegex(ValueError):
    """A permission regex that cannot be compiled: refused when written, never stored (a
    stored one would fail every later check of that user)."""

    def __init__(self, pattern: str, err: re.error) -> None:
        super().__init__(f"invalid regular expression '{pattern}': {err.msg}")
        self.pattern = pattern
        self.msg = err.msg
        self.pos = err.pos or 0

    def reason(self) -> list[Any]:
        """RabbitMQ's API reason: ``["invalid_regexp", Pattern, [Message, Position]]``."""
        return ["invalid_regexp", self.pattern, [self.msg, self.pos]]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Python's ``re`` (not Erlang's PCRE: the two differ at the edges): what it cannot
    compile is refused, as RabbitMQ refuses what PCRE cannot."""
    if not isinstance(pattern, str):
        raise InvalidRegex(repr(pattern), re.error("not a string"))
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as err:
        raise InvalidRegex(pattern, err if isinstance(err, re.error)
                           else re.error(str(err))) from None


@dataclass
class Permission:
    user: str
    vhost: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"
    _compiled: dict[str, re.Pattern[str] | None] = field(default_factory=dict, repr=False,
                                                          compare=False)

    def __post_init__(self) -> None:
        for kind in ("configure", "write", "read"):
            pattern = getattr(self, kind)
            self._compiled[kind] = compile_regex(pattern) if pattern else None  # "" denies all

    def allows(self, kind: Kind, name: str) -> bool:
        """RabbitMQ matches unanchored (``re:run``): anchor with ^...$ to be strict."""
        regex = self._compiled[kind]
        return regex is not None and regex.search(name) is not None

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "vhost": self.vhost, "configure": self.configure,
                "write": self.write, "read": self.read}


@functools.lru_cache(maxsize=1024)
def _topic_regex(pattern: str, user: str, vhost: str) -> re.Pattern[str]:
    return compile_regex(pattern.replace("{username}", user).replace("{vhost}", vhost))


@dataclass
class TopicPermission:
    user: str
    vhost: str
    exchange: str
    write: str = ".*"
    read: str = ".*"

    def __post_init__(self) -> None:
        for pattern in (self.write, self.read):
            if pattern:
                _topic_regex(pattern, self.user, self.vhost)  # InvalidRegex now, not at publish

    def allows(self, kind: Kind, routing_key: str) -> bool:
        pattern = self.write if kind == "write" else self.read
        return bool(pattern) and _topic_regex(pattern, self.user, self.vhost).search(
            routing_key) is not None

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "vhost": self.vhost, "exchange": self.exchange,
                "write": self.write, "read": self.read}


def indirect_targets(resource: str, arguments: dict[str, Any] | None) -> list[str]:
    """The exchanges a new queue (``x-dead-letter-exchange``) or exchange
    (``alternate-exchange``) will route into: declaring one needs write on them, or it would
    be a way into an exchange the user may not publish to (RabbitMQ's ``check_dlx`` and
    alternate-exchange check). Non-string values are left to the declare's own validation."""
    key = "x-dead-letter-exchange" if resource == "queue" else "alternate-exchange"
    value = (arguments or {}).get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return [value] if isinstance(value, str) else []


class Permissions:
    def __init__(self, listener: Any = None) -> None:
        """``listener``: the definitions recorder told about every change (None: nothing
        is persisted); given here, never set afterwards."""
        self.entries: dict[tuple[str, str], Permission] = {}
        self.topic: dict[tuple[str, str, str], TopicPermission] = {}  # (vhost, user, exchange)
        self.listener = listener
        self.version = 0  # bumped on every change: connections drop cached decisions

    def set(self, perm: Permission) -> None:
        self.entries[(perm.vhost, perm.user)] = perm
        self.version += 1
        if self.listener is not None:
            self.listener.permission_set(perm)

    def delete(self, vhost: str, user: str) -> bool:
        if self.entries.pop((vhost, user), None) is None:
            return False
        self.version += 1
        if self.listener is not None:
            self.listener.permission_deleted(vhost, user)
        return True

    def get(self, vhost: str, user: str) -> Permission | None:
        return self.entries.get((vhost, user))

    def can_access(self, vhost: str, user: str) -> bool:
        return (vhost, user) in self.entries

    def check(self, user: str, vhost: str, kind: Kind, resource: str, name: str) -> None:
        """Raise 403 ACCESS_REFUSED with RabbitMQ's text unless allowed."""
        perm = self.entries.get((vhost, user))
        checked = (name or "amq.default") if resource == "exchange" else name
        if perm is None or not perm.allows(kind, checked):
            raise access_refused(f"access to {resource} '{checked}' in vhost '{vhost}' "
                                 f"refused for user '{user}'")

    # -- topic permissions ---------------------------------------------------------------
    def set_topic(self, perm: TopicPermission) -> None:
        self.topic[(perm.vhost, perm.user, perm.exchange)] = perm
        self.version += 1
        if self.listener is not None:
            self.listener.topic_permission_set(perm)

    def delete_topic(self, vhost: str, user: str, exchange: str | None = None) -> int:
        """Drop one user's topic permissions in a vhost (all, or one exchange's)."""
        keys = [k for k in self.topic if k[0] == vhost and k[1] == user
                and (exchange is None or k[2] == exchange)]
        for key in keys:
            del self.topic[key]
            if self.listener is not None:
                self.listener.topic_permission_deleted(*key)
        self.version += 1
        return len(keys)

    def check_topic(self, user: str, vhost: str, kind: Kind, exchange: str,
                    routing_key: str) -> None:
        """For topic exchanges: 403 unless the routing key matches the user's pattern."""
        perm = self.topic.get((vhost, user, exchange))
        if perm is not None and not perm.allows(kind, routing_key):
            raise access_refused(f"access to topic '{routing_key}' in exchange "
                                 f"'{exchange}' in vhost '{vhost}' refused for user '{user}'")
