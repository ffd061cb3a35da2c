"""The broker: virtual hosts, users and live connections; shared by every listener."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smartbroker.auth import Users
from smartbroker.broker.idempotence import ProducerRegistry
from smartbroker.broker.limits import USER_LIMITS, VHOST_LIMITS
from smartbroker.broker.permissions import Permission, Permissions
from smartbroker.broker.vhost import VirtualHost
from smartbroker.config import Config

if TYPE_CHECKING:
    from smartbroker.broker.outbox import ClientConnection
    from smartbroker.broker.persistence import Persistence


class Broker:
    """Everything it depends on comes in here: with ``persistence`` its users, permissions
    and vhosts record their changes there, producers' dedup state is the durable one, and
    the stored state is restored before the constructor returns (without it: the
    defaults, kept in memory)."""

    def __init__(self, config: Config, persistence: Persistence | None = None) -> None:
        self.config = config
        self.persistence = persistence
        self.recorder = persistence.recorder if persistence is not None else None
        self.vhosts: dict[str, VirtualHost] = {}
        self.users = Users(self.recorder)
        self.permissions = Permissions(self.recorder)
        self.connections: set[ClientConnection] = set()  # every listener's live clients
        self.alarms: set[str] = set()  # "memory" / "disk" while a resource alarm is on
        self.producers = persistence.producers if persistence is not None else ProducerRegistry()
        self.on_vhost_added: list[Callable[[VirtualHost], None]] = []  # cluster mode's forwarding
        # cluster mode: awaited (with the vhost's name) before a 404, so a queue or exchange
        # another node just declared is seen (cluster/visibility.py); None on one node
        self.catch_up: Callable[[str | None], Awaitable[None]] | None = None
        # serve --workers: moves a connection to the worker leading its queue
        # (server/handoff.py); None on one node and across machines
        self.handoff: Any = None
        if persistence is None:
            self.add_defaults()
        else:
            persistence.restore(self)  # adds the defaults of whatever nothing is stored for

    def add_defaults(self, vhost: bool = True, user: bool = True, permission: bool = True) -> None:
        """The configured default vhost, administrator and its permission there (recorded
        when there is a recorder: at first start they are what gets stored)."""
        config = self.config
        if vhost:
            self.add_vhost(config.default_vhost)
        if user:
            self.users.add(config.default_user, config.default_pass, ["administrator"])
        if permission:
            self.permissions.set(Permission(config.default_user, config.default_vhost))

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            persistence = self.persistence
            vhost = self.vhosts[name] = (VirtualHost(name) if persistence is None
                                         else persistence.vhost(name))
            if self.recorder is not None:
                self.recorder.vhost_added(name)
            for hook in self.on_vhost_added:
                hook(vhost)
        return vhost

    # -- limits (broker/limits.py) ---------------------------------------------------------
    def set_limit(self, kind: str, owner: str, name: str, value: int | None) -> None:
        """Set (or with None clear) a vhost or user limit; ValueError for a bad name/value."""
        allowed = VHOST_LIMITS if kind == "vhost" else USER_LIMITS
        if name not in allowed:
            raise ValueError(f"unknown {kind} limit '{name}'; expected one of {', '.join(allowed)}")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"limit '{name}' must be an integer, got {value!r}")
        holder = self.vhosts.get(owner) if kind == "vhost" else self.users.users.get(owner)
        if holder is None:
            raise KeyError(owner)
        if value is None:
            holder.limits.pop(name, None)
        else:
            holder.limits[name] = value
        if self.recorder is not None:
            self.recorder.limits_changed(kind, owner, dict(holder.limits))

    def delete_vhost(self, name: str) -> bool:
        """Close its connections, delete its queues (and their stored messages)."""
        vhost = self.vhosts.pop(name, None)
        if vhost is None:
            return False
        for conn in list(self.connections):
            if conn.vhost is vhost:
                conn.server_close(320, f"CONNECTION_FORCED - vhost '{name}' is deleted")
        for q in list(vhost.queues.values()):
            vhost.drop_queue(q)
        for vhost_name, user in [k for k in self.permissions.entries if k[0] == name]:
            self.permissions.delete(vhost_name, user)
        for vhost_name, user in {k[:2] for k in self.permissions.topic if k[0] == name}:
            self.permissions.delete_topic(vhost_name, user)
        if self.recorder is not None:
            self.recorder.vhost_deleted(name)
        return True
