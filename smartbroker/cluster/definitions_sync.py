"""Other nodes' definition changes, applied to this node's running broker.

``EtcdDefinitionStore`` hands every change another node made to ``DefinitionsSync``,
which applies it through the same calls startup's restore uses (``add_vhost``,
``declare_exchange``, ``declare_queue``, ``bind``, ``permissions.set``, ...), in the
recorder's replaying mode so that nothing is written back to etcd. The changes of one
etcd transaction arrive one by one in key order (a binding can come before its queue), so
they are gathered and applied once per loop pass: creations in dependency order
(vhosts, users, permissions, policies, exchanges, queues, bindings), deletions in the
reverse order. A change this node cannot apply (a binding to a queue it never saw) is
logged and skipped; it never raises into the watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from smartbroker.auth import ScramCredential
from smartbroker.broker.permissions import InvalidRegex, Permission, TopicPermission
from smartbroker.broker.policies import Policy, PolicyError
from smartbroker.cluster.definitions_etcd import DefinitionChange, EtcdDefinitionStore
from smartbroker.cluster.exclusive_queues import remote_owner
from smartbroker.errors import AMQPError

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker

log = logging.getLogger("smartbroker.cluster.definitions")

ORDER = ("vhosts", "users", "user_limits", "user_scram", "permissions", "topic_permissions",
         "policies", "exchanges", "queues", "bindings")
_RANK = {table: i for i, table in enumerate(ORDER)}


class DefinitionsSync:
    """Subscribed to the store; ``applied`` counts the changes applied (tests wait on it)."""

    def __init__(self, broker: Broker, store: EtcdDefinitionStore,
                 applying: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        """``applying``: the block every pass runs in (forwarding's ``applying_peers``: a
        queue declared here for another node is never placed by this node)."""
        self.broker = broker
        self.applying = applying
        self._changes: list[DefinitionChange] = []
        self._scheduled = False
        self.applied = 0
        self.changed = asyncio.Event()  # set after each pass that applied something
        store.subscribe(self._received)

    @property
    def busy(self) -> bool:
        """Changes received and not applied yet (they are, later in this loop pass)."""
        return self._scheduled

    def received(self, change: DefinitionChange) -> None:
        """Apply ``change`` later in this loop pass (as one from the watch)."""
        self._received(change)

    def _received(self, change: DefinitionChange) -> None:
        self._changes.append(change)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._apply_all)

    def _apply_all(self) -> None:
        changes, self._changes = self._changes, []
        self._scheduled = False
        deletes = sorted((c for c in changes if c.new is None), key=lambda c: -_RANK[c.table])
        saves = sorted((c for c in changes if c.new is not None), key=lambda c: _RANK[c.table])
        recorder = self.broker.recorder
        assert recorder is not None
        with recorder.replaying(), self.applying():
            for change in (*deletes, *saves):
                try:
                    getattr(self, f"_{change.table}")(change.old, change.new)
                    self.applied += 1
                except (AMQPError, PolicyError, InvalidRegex, KeyError, ValueError) as exc:
                    log.warning("cannot apply another node's %s change %s: %s", change.table,
                                change.new if change.new is not None else change.old,
                                getattr(exc, "reply_text", exc))
                except Exception:
                    log.exception("applying another node's %s change failed", change.table)
        self.changed.set()

    # -- one method per table: (old record or None, new record or None) ------------------
    def _vhosts(self, old: Any, new: Any) -> None:
        if new is None:
            self.broker.delete_vhost(old.name)
            return
        vhost = self.broker.add_vhost(new.name)
        vhost.limits.clear()
        vhost.limits.update((new.metadata or {}).get("limits") or {})

    def _users(self, old: Any, new: Any) -> None:
        users = self.broker.users
        if new is None:
            users.delete(old.name)
            return
        current = users.users.get(new.name)
        if current is not None and current.password_hash == new.password_hash:
            current.tags = list(new.tags)  # the SCRAM credentials stay with the hash
        else:
            users.restore(new.name, new.password_hash, new.tags)

    def _user_limits(self, old: Any, new: Any) -> None:
        name, limits = new if new is not None else (old[0], {})
        user = self.broker.users.users.get(name)
        if user is not None:
            user.limits.clear()
            user.limits.update(limits)

    def _user_scram(self, old: Any, new: Any) -> None:
        name, rows = new if new is not None else (old[0], {})
        user = self.broker.users.users.get(name)
        if user is not None:
            user.scram = {m: ScramCredential.from_row(*row) for m, row in rows.items()}

    def _permissions(self, old: Any, new: Any) -> None:
        if new is None:
            self.broker.permissions.delete(old.vhost, old.user)
        else:
            self.broker.permissions.set(Permission(new.user, new.vhost, new.configure,
                                                   new.write, new.read))

    def _topic_permissions(self, old: Any, new: Any) -> None:
        if new is None:
            self.broker.permissions.delete_topic(old["vhost"], old["user"], old["exchange"])
        else:
            self.broker.permissions.set_topic(TopicPermission(**new))

    def _policies(self, old: Any, new: Any) -> None:
        vhost = self.broker.vhosts.get((new or old).vhost)
        if vhost is None:
            return
        if new is None:
            vhost.clear_policy(old.name)
        else:
            vhost.set_policy(Policy(new.name, new.pattern, new.definition, new.priority,
                                    new.apply_to, new.vhost))

    def _exchanges(self, old: Any, new: Any) -> None:
        vhost = self.broker.vhosts.get((new or old).vhost)
        if vhost is None:
            return
        if new is None:
            vhost.delete_exchange(old.name)
        elif new.name not in vhost.exchanges:
            vhost.declare_exchange(new.name, new.type, durable=new.durable,
                                   auto_delete=new.auto_delete,
                                   internal=new.internal, arguments=new.arguments)

    def _queues(self, old: Any, new: Any) -> None:
        vhost = self.broker.vhosts.get((new or old).vhost)
        if vhost is None:
            return
        if new is None:  # an exclusive one's owner is never a connection of this node
            vhost.delete_queue(old.name, owner=getattr(vhost.queues.get(old.name),
                                                       "exclusive_owner", None))
        elif new.name not in vhost.queues:
            owner = remote_owner(new)  # another node's exclusive queue: 405 here
            vhost.declare_queue(new.name, durable=new.durable, auto_delete=new.auto_delete,
                                arguments=new.arguments, exclusive=owner is not None,
                                owner=owner, server_named=True)  # amq.gen-: checked there

    def _bindings(self, old: Any, new: Any) -> None:
        b = new or old
        vhost = self.broker.vhosts.get(b.vhost)
        if vhost is None:
            return
        table = vhost.exchanges if b.destination_type == "exchange" else vhost.queues
        destination = table.get(b.destination)
        if new is None:
            vhost.unbind(b.source, destination, b.routing_key, b.arguments)
        elif destination is None:
            raise KeyError(f"{b.destination_type} '{b.destination}' is not known here")
        else:
            vhost.bind(b.source, destination, b.routing_key, b.arguments)


async def open_definitions(etcd: Any) -> EtcdDefinitionStore:
    """The cluster's definitions, read from etcd and followed (before the broker restores
    from them)."""
    return await EtcdDefinitionStore(etcd).open()
