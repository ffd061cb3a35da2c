"""The broker: virtual hosts, users and live connections; shared by every listener."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.auth import Users
from smartbroker.broker.vhost import VirtualHost
from smartbroker.config import Config

if TYPE_CHECKING:
    from smartbroker.server.connection import AMQPConnection


class Broker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.vhosts: dict[str, VirtualHost] = {config.default_vhost: VirtualHost(config.default_vhost)}
        self.users = Users()
        self.users.add(config.default_user, config.default_pass, ["administrator"])
        self.connections: set[AMQPConnection] = set()
