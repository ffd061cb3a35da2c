"""What survives a restart: durable definitions (SQLite) and persistent messages (log).

``Persistence`` is the vhosts' listener: every change to a durable exchange, queue,
binding or policy is written when it happens. At startup ``restore`` rebuilds the
vhosts from the definitions and then puts each durable queue's live messages back,
bodies left on disk. Transient objects and exclusive queues are never written, as in
RabbitMQ.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartbroker.broker.durable import MessageStore
from smartbroker.broker.exchange import Binding, Exchange
from smartbroker.broker.idempotence import ProducerRegistry
from smartbroker.broker.permissions import InvalidRegex, Permission, TopicPermission
from smartbroker.broker.policies import Policy, PolicyError
from smartbroker.broker.vhost import VirtualHost
from smartbroker.errors import AMQPError
from smartbroker.queues.base import Storage
from smartbroker.store.definitions import (
    BindingDef,
    DefinitionStore,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
)
from smartbroker.store.executors import Executors

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker

log = logging.getLogger("smartbroker.persistence")
MESSAGE_SEGMENT_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 4096  # as streams' x-stream-max-segment-size-bytes (stream_args.py)


def message_segment_bytes() -> int:
    """Segment size of the message store: ``SMARTBROKER_MESSAGE_SEGMENT_BYTES`` (tests and
    benchmarks use small ones), at least 4 KiB, else 64 MiB."""
    raw = os.environ.get("SMARTBROKER_MESSAGE_SEGMENT_BYTES", "")
    return max(MIN_SEGMENT_BYTES, int(raw)) if raw.isdigit() else MESSAGE_SEGMENT_BYTES


def _persisted_queue(q: Any) -> bool:
    return q.durable and q.exclusive_owner is None


def _persisted_binding(binding: Binding) -> bool:
    dest = binding.destination
    durable_dest = dest.durable if isinstance(dest, Exchange) else _persisted_queue(dest)
    return binding.source.durable and durable_dest


def _binding_def(vhost: str, binding: Binding) -> BindingDef:
    dest = binding.destination
    kind = "exchange" if isinstance(dest, Exchange) else "queue"
    return BindingDef(vhost, binding.source.name, dest.name, kind, binding.routing_key,
                      dict(binding.arguments))


class Persistence:
    def __init__(self, data_dir: Path, fsync: str = "batch") -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.fsync = fsync
        self.definitions = DefinitionStore(data_dir / "definitions.sqlite3")
        self.executors = Executors()  # the disk worker threads of every store below
        self.messages = MessageStore(data_dir / "messages", fsync=fsync,
                                     segment_bytes=message_segment_bytes(),
                                     executors=self.executors)
        # what every vhost (and through it every durable queue) persists into
        self.storage = Storage(self.messages, data_dir, fsync, self.executors)

    def vhost(self, name: str) -> VirtualHost:
        """A new vhost that persists here (its listener is set once restore is done)."""
        return VirtualHost(name, self.storage)

    # -- listener: called by VirtualHost on every change -------------------------------
    def exchange_declared(self, vhost: str, ex: Exchange) -> None:
        if ex.durable:
            self.definitions.save_exchange(ExchangeDef(vhost, ex.name, ex.type_name, True,
                                                       ex.auto_delete, ex.internal, dict(ex.arguments)))

    def exchange_deleted(self, vhost: str, ex: Exchange) -> None:
        if ex.durable:
            self.definitions.delete_exchange(vhost, ex.name)

    def queue_declared(self, vhost: str, q: Any) -> None:
        if _persisted_queue(q):
            self.definitions.save_queue(QueueDef(vhost, q.name, True, q.auto_delete,
                                                 dict(q.arguments), q.type_name))

    def queue_deleted(self, vhost: str, q: Any) -> None:
        if _persisted_queue(q):
            self.definitions.delete_queue(vhost, q.name)

    def binding_added(self, vhost: str, binding: Binding) -> None:
        if _persisted_binding(binding):
            self.definitions.save_binding(_binding_def(vhost, binding))

    def binding_removed(self, vhost: str, binding: Binding) -> None:
        if _persisted_binding(binding):
            self.definitions.delete_binding(_binding_def(vhost, binding))

    def policy_set(self, vhost: str, policy: Policy) -> None:
        self.definitions.save_policy(PolicyDef(vhost, policy.name, policy.pattern,
                                               dict(policy.definition), policy.priority,
                                               policy.apply_to))

    def policy_cleared(self, vhost: str, name: str) -> None:
        self.definitions.delete_policy(vhost, name)

    def vhost_added(self, name: str) -> None:
        self.definitions.save_vhost(VHostDef(name))

    def limits_changed(self, kind: str, owner: str, limits: dict[str, int]) -> None:
        if kind == "vhost":
            self.definitions.save_vhost(VHostDef(owner, {"limits": limits}))
        else:
            self.definitions.save_user_limits(owner, limits)

    def vhost_deleted(self, name: str) -> None:
        self.definitions.delete_vhost(name)

    def user_saved(self, name: str, password_hash: str, tags: list[str]) -> None:
        self.definitions.save_user(UserDef(name, password_hash, list(tags)))

    def user_deleted(self, name: str) -> None:
        self.definitions.delete_user(name)

    def permission_set(self, perm: Permission) -> None:
        self.definitions.save_permission(PermissionDef(perm.user, perm.vhost, perm.configure,
                                                       perm.write, perm.read))

    def permission_deleted(self, vhost: str, user: str) -> None:
        self.definitions.delete_permission(user, vhost)

    def topic_permission_set(self, perm: TopicPermission) -> None:
        self.definitions.save_topic_permission(perm.as_json())

    def topic_permission_deleted(self, vhost: str, user: str, exchange: str) -> None:
        self.definitions.delete_topic_permission(user, vhost, exchange)

    # -- startup -------------------------------------------------------------------------
    def restore(self, broker: Broker) -> None:
        defs = self.definitions.load_all()
        # the vhosts made before persistence existed are still empty: made again, with storage
        names = [v.name for v in defs.vhosts] if defs.vhosts else list(broker.vhosts)
        broker.vhosts = {name: self.vhost(name) for name in names}
        if defs.vhosts:
            for vdef in defs.vhosts:
                broker.vhosts[vdef.name].limits = dict((vdef.metadata or {}).get("limits") or {})
        else:  # first start: keep and record the defaults
            for name in broker.vhosts:
                self.vhost_added(name)
        if defs.users:
            broker.users.users.clear()
            for udef in defs.users:
                broker.users.restore(udef.name, udef.password_hash, udef.tags)
        else:
            for user in broker.users.users.values():
                self.user_saved(user.name, user.password_hash, user.tags)
        for name, limits in self.definitions.load_user_limits().items():
            if name in broker.users.users:
                broker.users.users[name].limits = dict(limits)
        broker.users.listener = self
        if defs.permissions:
            broker.permissions.entries.clear()
            for pdef in defs.permissions:
                try:
                    broker.permissions.set(Permission(pdef.user, pdef.vhost, pdef.configure,
                                                      pdef.write, pdef.read))
                except InvalidRegex as exc:  # stored before regexes were checked: deny
                    log.error("skipping stored permission of %s in %s: %s", pdef.user,
                              pdef.vhost, exc)
        else:
            for perm in broker.permissions.entries.values():
                self.permission_set(perm)
        for tdef in self.definitions.load_topic_permissions():
            try:
                broker.permissions.set_topic(TopicPermission(**tdef))
            except InvalidRegex as exc:  # denied, not dropped: no entry would allow all keys
                log.error("stored topic permission %s denies all: %s", tdef, exc)
                broker.permissions.set_topic(TopicPermission(**{**tdef, "write": "",
                                                                "read": ""}))
        broker.permissions.listener = self
        for pdef in defs.policies:
            vhost = broker.vhosts.get(pdef.vhost)
            if vhost is None:
                continue
            try:
                vhost.set_policy(Policy(pdef.name, pdef.pattern, pdef.definition, pdef.priority,
                                        pdef.apply_to, pdef.vhost))
            except PolicyError as exc:
                log.error("skipping stored policy %s: %s", pdef.name, exc)
        for edef in defs.exchanges:
            vhost = broker.vhosts.get(edef.vhost)
            if vhost is not None and edef.name not in vhost.exchanges:
                self._try(vhost.declare_exchange, edef.name, edef.type, durable=True,
                          auto_delete=edef.auto_delete, internal=edef.internal,
                          arguments=edef.arguments)
        for qdef in defs.queues:
            vhost = broker.vhosts.get(qdef.vhost)
            if vhost is not None:
                self._try(vhost.declare_queue, qdef.name, durable=True, auto_delete=qdef.auto_delete,
                          arguments=qdef.arguments)
        for bdef in defs.bindings:
            vhost = broker.vhosts.get(bdef.vhost)
            if vhost is None:
                continue
            table = vhost.exchanges if bdef.destination_type == "exchange" else vhost.queues
            dest = table.get(bdef.destination)
            if dest is not None and bdef.source in vhost.exchanges:
                self._try(vhost.bind, bdef.source, dest, bdef.routing_key, bdef.arguments)
        self._restore_messages(broker)
        broker.producers = ProducerRegistry(self.data_dir / "producers", self.fsync)
        for vhost in broker.vhosts.values():
            vhost.listener = self

    def _restore_messages(self, broker: Broker) -> None:
        recovered = self.messages.recover()
        claimed: set[tuple[str, str]] = set()
        total = 0
        for (vhost_name, queue_name), entries in recovered.items():
            vhost = broker.vhosts.get(vhost_name)
            q = vhost.queues.get(queue_name) if vhost else None
            if q is None or not q.durable:
                continue
            claimed.add((vhost_name, queue_name))
            q.restore(entries)
            total += len(entries)
        self.messages.drop_unclaimed(claimed, recovered)
        stats = self.messages.log.stats
        log.info("recovered %d message(s) in %d queue(s); skipped %d damaged record(s), "
                 "truncated %d torn byte(s)", total, len(claimed), stats.bad_records,
                 stats.truncated_bytes)
        if self.messages.undecodable_properties:
            log.warning("message store: %d recovered message(s) have unreadable properties "
                        "(kept, without priority or TTL)", self.messages.undecodable_properties)
        for gap in stats.missing_ranges:
            log.error("message store: offsets %d-%d are missing (segment lost)", *gap)
        for name in stats.unreadable_segments:
            log.error("message store: segment %s is unreadable", name)

    @staticmethod
    def _try(fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except AMQPError as exc:
            log.error("skipping stored definition: %s", exc.reply_text)

    async def aclose(self, broker: Broker | None = None) -> None:
        if broker is not None:
            broker.producers.close()
        for vhost in (broker.vhosts.values() if broker else ()):
            for q in vhost.queues.values():
                q.close()
        await self.messages.aclose()
        self.definitions.close()
        self.executors.shutdown()
