"""Per-vhost permissions: three regexes (configure, write, read) per user, as RabbitMQ.

Which operation needs which permission on which resource is RabbitMQ's table:
configure for declare/delete, write for publishing into an exchange and for the queue
(or destination exchange) side of a bind, read for consuming/getting/purging and for the
exchange (or source) side of a bind. The default exchange is checked as ``amq.default``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from smartbroker.errors import access_refused

Kind = Literal["configure", "write", "read"]


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
            self._compiled[kind] = re.compile(pattern) if pattern else None  # "" denies all

    def allows(self, kind: Kind, name: str) -> bool:
        """RabbitMQ matches unanchored (``re:run``): anchor with ^...$ to be strict."""
        regex = self._compiled[kind]
        return regex is not None and regex.search(name) is not None

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "vhost": self.vhost, "configure": self.configure,
                "write": self.write, "read": self.read}


class Permissions:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Permission] = {}
        self.listener: Any = None
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
