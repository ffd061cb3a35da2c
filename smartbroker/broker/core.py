"""The broker: virtual hosts, users and live connections; shared by every listener."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.auth import Users
from smartbroker.broker.idempotence import ProducerRegistry
from smartbroker.broker.permissions import Permission, Permissions
from smartbroker.broker.vhost import VirtualHost
from smartbroker.config import Config

if TYPE_CHECKING:
    from smartbroker.broker.persistence import Persistence
    from smartbroker.server.connection import AMQPConnection


class Broker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.vhosts: dict[str, VirtualHost] = {config.default_vhost: VirtualHost(config.default_vhost)}
        self.users = Users()
        self.users.add(config.default_user, config.default_pass, ["administrator"])
        self.permissions = Permissions()
        self.permissions.set(Permission(config.default_user, config.default_vhost))
        self.connections: set[AMQPConnection] = set()
        self.alarms: set[str] = set()  # "memory" / "disk" while a resource alarm is on
        self.persistence: Persistence | None = None
        self.producers = ProducerRegistry()  # replaced by a durable one by Persistence

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(name)
            if self.persistence is not None:
                self.persistence.attach(vhost)
                vhost.listener = self.persistence
                self.persistence.vhost_added(name)
        return vhost

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
        if self.persistence is not None:
            self.persistence.vhost_deleted(name)
        return True
