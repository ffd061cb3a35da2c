"""The definitions recorder: writes every durable definition change to the definitions
store (SQLite; etcd in a cluster) as it happens.

Users, Permissions, every VirtualHost and the Broker get it in their constructors as their
``listener``. While ``restoring`` is on, it writes nothing: startup rebuilds the broker
through the same declare/set calls a client makes, and what is being read back from the
store must not be written into it again. Transient objects and exclusive queues are never
written on a single node, as in RabbitMQ; a cluster's store keeps them (on the node's lease).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any

from smartbroker.broker.exchange import Binding, Exchange
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.broker.policies import Policy
from smartbroker.store.definitions import (
    BindingDef,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
)
from smartbroker.store.definitions_api import DefinitionStoreAPI


def _binding_def(vhost: str, binding: Binding) -> BindingDef:
    dest = binding.destination
    kind = "exchange" if isinstance(dest, Exchange) else "queue"
    return BindingDef(vhost, binding.source.name, dest.name, kind, binding.routing_key,
                      dict(binding.arguments))


class DefinitionsRecorder:
    """Listener of Users, Permissions, VirtualHost and Broker (definition changes only;
    never on the message path, so the ``restoring`` check costs nothing that matters)."""

    def __init__(self, definitions: DefinitionStoreAPI) -> None:
        self.definitions = definitions
        self.commits_later = definitions.commits_later  # etcd: answers await pending()
        self.restoring = False  # on while startup reads the store back: write nothing
        # a cluster's store (etcd) also keeps transient queues and exchanges (on the
        # declaring node's lease), so every node sees them, as RabbitMQ's nodes do
        self.transient = getattr(definitions, "keeps_transient", False)
        # etcd: a queue or exchange created here is written only if no other node created
        # it a moment ago (create-if-absent; else the declare catches up and runs again)
        self._create_queue = getattr(definitions, "create_queue", definitions.save_queue)
        self._create_exchange = getattr(definitions, "create_exchange", definitions.save_exchange)

    def _kept_queue(self, q: Any) -> bool:
        # a cluster keeps exclusive queues too, marked with their owner: RabbitMQ's other
        # nodes know them (405 RESOURCE_LOCKED, their name taken, publishes routed to them)
        return self.transient or (q.durable and q.exclusive_owner is None)

    def _kept_binding(self, binding: Binding) -> bool:
        dest = binding.destination
        kept_dest = (dest.durable or self.transient) if isinstance(dest, Exchange) \
            else self._kept_queue(dest)
        return (binding.source.durable or self.transient) and kept_dest

    def pending(self) -> Awaitable[object] | None:
        """What a front end awaits before it answers -ok for the changes recorded so far:
        None on a single node (SQLite commits in the call), the etcd commit in a cluster
        ("a declare answers -ok only after etcd accepted it")."""
        return self.definitions.pending()

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Restoring mode for the duration of the block (what it declares is not saved)."""
        self.restoring = True
        try:
            yield
        finally:
            self.restoring = False

    # -- vhost definitions ---------------------------------------------------------------
    def exchange_declared(self, vhost: str, ex: Exchange) -> None:
        if (ex.durable or self.transient) and not self.restoring:
            self._create_exchange(ExchangeDef(vhost, ex.name, ex.type_name, ex.durable,
                                              ex.auto_delete, ex.internal, dict(ex.arguments)))

    def exchange_deleted(self, vhost: str, ex: Exchange) -> None:
        if (ex.durable or self.transient) and not self.restoring:
            self.definitions.delete_exchange(vhost, ex.name)

    def queue_declared(self, vhost: str, q: Any) -> None:
        if self._kept_queue(q) and not self.restoring:
            qdef = QueueDef(vhost, q.name, q.durable, q.auto_delete, dict(q.arguments),
                            q.type_name)
            if q.exclusive_owner is None:
                self._create_queue(qdef)
            else:  # only a cluster's store (etcd) has this
                self.definitions.save_exclusive_queue(  # type: ignore[attr-defined]
                    qdef, str(getattr(q.exclusive_owner, "name", "")))

    def queue_deleted(self, vhost: str, q: Any) -> None:
        if self._kept_queue(q) and not self.restoring:
            self.definitions.delete_queue(vhost, q.name)

    def binding_added(self, vhost: str, binding: Binding) -> None:
        if self._kept_binding(binding) and not self.restoring:
            self.definitions.save_binding(_binding_def(vhost, binding))

    def binding_removed(self, vhost: str, binding: Binding) -> None:
        if self._kept_binding(binding) and not self.restoring:
            self.definitions.delete_binding(_binding_def(vhost, binding))

    def policy_set(self, vhost: str, policy: Policy) -> None:
        if not self.restoring:
            self.definitions.save_policy(PolicyDef(vhost, policy.name, policy.pattern,
                                                   dict(policy.definition), policy.priority,
                                                   policy.apply_to))

    def policy_cleared(self, vhost: str, name: str) -> None:
        if not self.restoring:
            self.definitions.delete_policy(vhost, name)

    # -- broker definitions --------------------------------------------------------------
    def vhost_added(self, name: str) -> None:
        if not self.restoring:
            self.definitions.save_vhost(VHostDef(name))

    def limits_changed(self, kind: str, owner: str, limits: dict[str, int]) -> None:
        if self.restoring:
            return
        if kind == "vhost":
            self.definitions.save_vhost(VHostDef(owner, {"limits": limits}))
        else:
            self.definitions.save_user_limits(owner, limits)

    def vhost_deleted(self, name: str) -> None:
        if not self.restoring:
            self.definitions.delete_vhost(name)

    def user_saved(self, name: str, password_hash: str, tags: list[str]) -> None:
        if not self.restoring:
            self.definitions.save_user(UserDef(name, password_hash, list(tags)))

    def user_scram_saved(self, name: str, rows: dict[str, tuple[str, int, str, str]]) -> None:
        """A user's SCRAM credentials, mechanism -> (salt, iterations, stored, server key)."""
        if not self.restoring:
            self.definitions.save_user_scram(name, rows)

    def user_deleted(self, name: str) -> None:
        if not self.restoring:
            self.definitions.delete_user(name)

    def permission_set(self, perm: Permission) -> None:
        if not self.restoring:
            self.definitions.save_permission(PermissionDef(perm.user, perm.vhost, perm.configure,
                                                           perm.write, perm.read))

    def permission_deleted(self, vhost: str, user: str) -> None:
        if not self.restoring:
            self.definitions.delete_permission(user, vhost)

    def topic_permission_set(self, perm: TopicPermission) -> None:
        if not self.restoring:
            self.definitions.save_topic_permission(perm.as_json())

    def topic_permission_deleted(self, vhost: str, user: str, exchange: str) -> None:
        if not self.restoring:
            self.definitions.delete_topic_permission(user, vhost, exchange)
