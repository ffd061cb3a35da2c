"""Who may call which management endpoint, and which objects a list shows: RabbitMQ 3.10's
model (``rabbit_mgmt_util``), checked against a real 3.10.8.

Two layers, as in RabbitMQ:

* **Tags decide the endpoint.** ``ENDPOINT_RULES`` maps every API route to one rule
  (``is_authorized``, ``_vhost``, ``_admin``, ``_monitor``, ``_policies``...). A route with
  no entry is administrator-only, so a new endpoint is never open by accident
  (``tests/management/test_permission_matrix.py`` checks that every route has one).
* **Vhost permissions decide the objects.** A vhost is a user's "login vhost" when it has a
  permission entry there. Lists show objects of login vhosts only (administrators: all
  vhosts; ``/api/vhosts`` for monitoring users: all). Connections, channels and consumers
  are filtered by owner unless the caller is ``monitoring``/``administrator``.
* **Operations go through the AMQP checks.** Declare, delete, purge, bind, get and publish
  run as the caller over a channel in RabbitMQ, so they need a permission entry in the
  vhost (administrators too) and the configure/write/read regexes AMQP checks; the
  refusals come back as RabbitMQ's management plugin reports them (``Refusal``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartbroker.broker.permissions import indirect_targets
from smartbroker.errors import AMQPError
from smartbroker.management.errors import ApiError, bad_request, not_authorised

if TYPE_CHECKING:
    from smartbroker.auth import User
    from smartbroker.broker.core import Broker


class Rule(enum.Enum):
    ANY = "is_authorized"                          # any management user
    ADMIN = "is_authorized_admin"
    MONITOR = "is_authorized_monitor"
    VHOST = "is_authorized_vhost"                  # administrator, or may log into {vhost}
    VHOST_VISIBLE = "is_authorized_vhost_visible"  # ... or monitoring
    POLICIES = "is_authorized_policies"            # administrator, or policymaker in {vhost}
    GLOBAL_PARAMETERS = "is_authorized_global_parameters"  # policymaker
    OBJECT = "is_authorized_user"                  # checked by the router against the owner
    PUBLIC = "no_login"                            # asked before login (``/api/auth``)


def _rules(rule: Rule, *routes: str) -> dict[tuple[str, str], Rule]:
    out = {}
    for route in routes:
        methods, _, path = route.partition(" ")
        for method in methods.split(","):
            out[(method, path)] = rule
    return out


ENDPOINT_RULES: dict[tuple[str, str], Rule] = {
    **_rules(Rule.ANY,
             "GET /api/overview", "GET /api/whoami", "GET /api/cluster-name",
             "GET /api/extensions", "GET /api/vhosts", "GET /api/connections",
             "GET /api/channels", "GET /api/consumers", "GET /api/consumers/{vhost}",
             "GET /api/exchanges", "GET /api/queues", "GET /api/bindings", "GET /api/policies",
             "GET /api/health/checks/alarms", "GET /api/health/checks/local-alarms",
             "GET /api/health/checks/virtual-hosts", "GET /api/healthchecks/node",
             "GET /api/health/checks/node-is-quorum-critical",
             "GET /api/health/checks/node-is-mirror-sync-critical",
             "GET /api/health/checks/port-listener/{port}",
             "GET /api/health/checks/protocol-listener/{protocol}",
             "GET /api/dlq", "GET /api/streams", "GET /api/groups"),
    **_rules(Rule.MONITOR, "GET /api/nodes", "GET /api/nodes/{name}"),
    **_rules(Rule.PUBLIC, "GET /api/auth"),
    **_rules(Rule.ADMIN, "GET /api/users", "GET,PUT,DELETE /api/users/{name}",
             "GET /api/users/{name}/permissions", "GET /api/users/{name}/topic-permissions",
             "GET /api/permissions", "GET,PUT,DELETE /api/permissions/{vhost}/{user}",
             "GET /api/topic-permissions", "GET,PUT,DELETE /api/topic-permissions/{vhost}/{user}",
             "GET,POST /api/definitions", "GET,POST /api/definitions/{vhost}"),
    **_rules(Rule.ADMIN, "GET /api/feature-flags", "GET,PUT,DELETE /api/vhosts/{vhost}",
             "GET /api/vhosts/{vhost}/permissions",
             "PUT,DELETE /api/vhost-limits/{vhost}/{name}",
             "PUT,DELETE /api/user-limits/{user}/{name}"),
    **_rules(Rule.GLOBAL_PARAMETERS, "GET /api/global-parameters"),
    **_rules(Rule.POLICIES, "GET /api/parameters", "GET,PUT,DELETE /api/policies/{vhost}/{name}"),
    **_rules(Rule.VHOST_VISIBLE, "GET /api/vhost-limits", "GET /api/vhost-limits/{vhost}",
             "GET /api/user-limits", "GET /api/user-limits/{user}"),
    **_rules(Rule.VHOST,
             "GET /api/vhosts/{vhost}/connections", "GET /api/vhosts/{vhost}/channels",
             "GET /api/exchanges/{vhost}", "GET,PUT,DELETE /api/exchanges/{vhost}/{name}",
             "POST /api/exchanges/{vhost}/{name}/publish",
             "GET /api/exchanges/{vhost}/{name}/bindings/source",
             "GET /api/exchanges/{vhost}/{name}/bindings/destination",
             "GET /api/queues/{vhost}", "GET,PUT,DELETE /api/queues/{vhost}/{name}",
             "DELETE /api/queues/{vhost}/{name}/contents", "POST /api/queues/{vhost}/{name}/get",
             "GET /api/queues/{vhost}/{name}/bindings",
             "GET /api/bindings/{vhost}", "GET,POST /api/bindings/{vhost}/e/{source}/{kind}/{dest}",
             "GET,DELETE /api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
             "GET /api/policies/{vhost}", "GET /api/aliveness-test/{vhost}",
             "GET /api/dlq/{vhost}", "GET /api/dlq/{vhost}/{queue}",
             "POST /api/dlq/{vhost}/{queue}/redrive",
             "GET /api/streams/{vhost}", "GET /api/streams/{vhost}/{name}",
             "GET /api/groups/{vhost}", "GET /api/groups/{vhost}/{queue}/{group}",
             "POST /api/groups/{vhost}/{queue}/{group}/reset"),
    **_rules(Rule.OBJECT, "GET,DELETE /api/connections/{name}",
             "GET /api/connections/{name}/channels", "GET /api/channels/{name}"),
}

VHOST_REASON = "User not authorised to access virtual host"
OBJECT_REASON = "User not authorised to access object"


@dataclass
class Caller:
    """The authenticated user of one request, with the questions routers ask about it."""

    user: User
    broker: Broker

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.user.tags

    @property
    def is_monitor(self) -> bool:
        return bool({"administrator", "monitoring"} & set(self.user.tags))

    @property
    def is_policymaker(self) -> bool:
        return bool({"administrator", "policymaker"} & set(self.user.tags))

    def may_login(self, vhost: str) -> bool:
        return self.broker.permissions.can_access(vhost, self.name)

    def sees_vhost(self, vhost: str) -> bool:
        """RabbitMQ's ``filter_vhost``: administrators see every vhost's objects, others
        only those of the vhosts they may log into (monitoring included)."""
        return self.is_admin or self.may_login(vhost)

    def lists_vhost(self, vhost: str) -> bool:
        """``list_visible_vhosts``: monitoring users learn of every vhost."""
        return self.is_monitor or self.may_login(vhost)

    def sees_owner(self, user: str | None) -> bool:
        """``filter_user``: connections, channels, consumers of others need monitoring."""
        return self.is_monitor or user == self.name

    def enforce(self, rule: Rule, vhost: str | None) -> None:
        """Raise RabbitMQ's 401 unless ``rule`` admits this caller (for ``vhost``, if the
        route names one that exists; a missing vhost is the route's 404)."""
        exists = vhost is not None and vhost in self.broker.vhosts
        if rule is Rule.ADMIN and not self.is_admin:
            raise not_authorised("Not administrator user")
        if rule is Rule.MONITOR and not self.is_monitor:
            raise not_authorised("Not monitor user")
        if rule is Rule.VHOST and exists and not (self.is_admin or self.may_login(vhost)):
            raise not_authorised(VHOST_REASON)
        if rule is Rule.VHOST_VISIBLE and exists and not (self.is_monitor
                                                          or self.may_login(vhost)):
            raise not_authorised(VHOST_REASON)
        if rule is Rule.POLICIES and not (self.is_admin or (
                self.is_policymaker and (not exists or self.may_login(vhost)))):
            raise not_authorised(OBJECT_REASON)
        if rule is Rule.GLOBAL_PARAMETERS and not self.is_policymaker:
            raise not_authorised(OBJECT_REASON)

    def owns(self, owner: str | None, deleting: bool = False) -> None:
        """``is_authorized_user`` for one connection or channel: its owner, else monitoring
        (reading) or administrator (closing)."""
        allowed = self.is_admin if deleting else self.is_monitor
        if not (allowed or owner == self.name):
            raise not_authorised(OBJECT_REASON)

    def amqp(self, vhost: str) -> AmqpAccess:
        """The AMQP permission checks of an operation RabbitMQ runs over a channel as the
        caller; without a permission entry in the vhost even an administrator is refused."""
        if not self.may_login(vhost):
            raise not_authorised("Access refused.")
        return AmqpAccess(self, vhost)


class Refusal(enum.Enum):
    """How the management plugin reports an AMQP access refusal, per operation."""

    PLAIN = "plain"      # declare/delete/purge/bind: 401 "Access refused."
    REASON = "reason"    # get: 401 "ACCESS_REFUSED - <text>"
    BAD = "bad"          # publish: 400 "403 ACCESS_REFUSED - <text>"


@dataclass
class AmqpAccess:
    caller: Caller
    vhost: str

    def check(self, kind: str, resource: str, name: str,
              refusal: Refusal = Refusal.PLAIN) -> None:
        try:
            self.caller.broker.permissions.check(self.caller.name, self.vhost, kind,  # type: ignore[arg-type]
                                                 resource, name)
        except AMQPError as err:
            raise refusal_error(err, refusal) from None

    def check_topic(self, kind: str, exchange: Any, routing_key: str,
                    refusal: Refusal = Refusal.PLAIN) -> None:
        perms = self.caller.broker.permissions
        if not perms.topic or exchange is None or exchange.type_name != "topic":
            return
        try:
            perms.check_topic(self.caller.name, self.vhost, kind, exchange.name,  # type: ignore[arg-type]
                              routing_key)
        except AMQPError as err:
            raise refusal_error(err, refusal) from None

    def check_declare(self, resource: str, name: str, arguments: dict[str, Any],
                      exists: bool) -> None:
        """RabbitMQ's declare: configure on the object; a new queue with a dead-letter
        exchange (or exchange with an alternate exchange) also needs read on itself and
        write on that exchange, or it would be a way into an exchange the caller may not
        publish to (``rabbit_channel``: ``check_dlx`` / alternate-exchange)."""
        self.check("configure", resource, name)
        if exists:
            return
        for target in indirect_targets(resource, arguments):
            self.check("read", resource, name)
            self.check("write", "exchange", target)


def refusal_error(err: AMQPError, refusal: Refusal) -> ApiError:
    if refusal is Refusal.REASON:
        return not_authorised(f"ACCESS_REFUSED - {err.text}")
    if refusal is Refusal.BAD:
        return bad_request(f"403 ACCESS_REFUSED - {err.text}")
    return not_authorised("Access refused.")
