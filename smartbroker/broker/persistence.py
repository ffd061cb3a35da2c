"""What survives a restart: durable definitions (SQLite) and persistent messages (log).

``Persistence`` owns the stores and what is built on them: the definitions recorder
(broker/recorder.py; the listener given to users, permissions and every vhost, which
writes each change when it happens), the vhosts' ``Storage`` and the durable producer
registry. A ``Broker`` built with it calls ``restore`` once from its constructor: the
definitions are read back into it and then each durable queue's live messages are put
back, bodies left on disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartbroker.auth import ScramCredential
from smartbroker.broker.durable import MessageStore
from smartbroker.broker.idempotence import ProducerRegistry
from smartbroker.broker.permissions import InvalidRegex, Permission, TopicPermission
from smartbroker.broker.policies import Policy, PolicyError
from smartbroker.broker.recorder import DefinitionsRecorder
from smartbroker.broker.vhost import VirtualHost
from smartbroker.errors import AMQPError
from smartbroker.queues.base import Storage
from smartbroker.store.definitions import Definitions, DefinitionStore, PermissionDef
from smartbroker.store.definitions_api import DefinitionStoreAPI
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


class Persistence:
    def __init__(self, data_dir: Path, fsync: str = "batch",
                 definitions: DefinitionStoreAPI | None = None,
                 stream_flush_interval_ms: float = 1000.0) -> None:
        """``definitions``: cluster mode's store (etcd); else SQLite in ``data_dir``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.fsync = fsync
        self.definitions: DefinitionStoreAPI = (
            definitions if definitions is not None
            else DefinitionStore(data_dir / "definitions.sqlite3"))
        self.executors = Executors()  # the disk worker threads of every store below
        self.messages = MessageStore(data_dir / "messages", fsync=fsync,
                                     segment_bytes=message_segment_bytes(),
                                     executors=self.executors)
        # what every vhost (and through it every durable queue) persists into
        self.storage = Storage(self.messages, data_dir, fsync, self.executors,
                               stream_flush_interval_ms)
        # the listener of users, permissions and every vhost (broker/recorder.py)
        self.recorder = DefinitionsRecorder(self.definitions)
        # producers' dedup state; its files under the broker's bound on open handles
        self.producers = ProducerRegistry(data_dir / "producers", fsync,
                                          handles=self.executors.handles)

    def vhost(self, name: str) -> VirtualHost:
        """A new vhost that persists here and records its definitions here."""
        return VirtualHost(name, self.storage, self.recorder)

    # -- startup -------------------------------------------------------------------------
    def restore(self, broker: Broker) -> None:
        """Called once by ``Broker.__init__``: first the defaults of whatever nothing is
        stored for (first start: recorded, as a client's declarations would be), then the
        stored definitions, read back in restoring mode so that nothing is written again."""
        defs = self.definitions.load_all()
        broker.add_defaults(vhost=not defs.vhosts, user=not defs.users,
                            permission=not defs.permissions)
        with self.recorder.replaying():
            for vdef in defs.vhosts:
                broker.add_vhost(vdef.name).limits.update((vdef.metadata or {}).get("limits") or {})
            for udef in defs.users:
                broker.users.restore(udef.name, udef.password_hash, udef.tags)
            for name, limits in self.definitions.load_user_limits().items():
                if name in broker.users.users:
                    broker.users.users[name].limits.update(limits)
            for name, rows in self.definitions.load_user_scram().items():
                if name in broker.users.users:
                    broker.users.users[name].scram = {m: ScramCredential.from_row(*row)
                                                      for m, row in rows.items()}
            self._restore_permissions(broker, defs.permissions)
            self._restore_vhost_definitions(broker, defs)
        self._restore_messages(broker)

    def _restore_permissions(self, broker: Broker, stored: list[PermissionDef]) -> None:
        for pdef in stored:
            try:
                broker.permissions.set(Permission(pdef.user, pdef.vhost, pdef.configure,
                                                  pdef.write, pdef.read))
            except InvalidRegex as exc:  # stored before regexes were checked: deny
                log.error("skipping stored permission of %s in %s: %s", pdef.user,
                          pdef.vhost, exc)
        for tdef in self.definitions.load_topic_permissions():
            try:
                broker.permissions.set_topic(TopicPermission(**tdef))
            except InvalidRegex as exc:  # denied, not dropped: no entry would allow all keys
                log.error("stored topic permission %s denies all: %s", tdef, exc)
                broker.permissions.set_topic(TopicPermission(**{**tdef, "write": "",
                                                                "read": ""}))

    def _restore_vhost_definitions(self, broker: Broker, defs: Definitions) -> None:
        """Policies, exchanges, queues, bindings; one refused now is logged and skipped."""
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
                self._try(vhost.declare_exchange, edef.name, edef.type, durable=edef.durable,
                          auto_delete=edef.auto_delete, internal=edef.internal,
                          arguments=edef.arguments)
        for qdef in defs.queues:
            vhost = broker.vhosts.get(qdef.vhost)
            if vhost is not None:
                self._try(vhost.declare_queue, qdef.name, durable=qdef.durable,
                          auto_delete=qdef.auto_delete, arguments=qdef.arguments,
                          server_named=True)  # a stored amq.gen- name was generated
        for bdef in defs.bindings:
            vhost = broker.vhosts.get(bdef.vhost)
            if vhost is None:
                continue
            table = vhost.exchanges if bdef.destination_type == "exchange" else vhost.queues
            dest = table.get(bdef.destination)
            if dest is not None and bdef.source in vhost.exchanges:
                self._try(vhost.bind, bdef.source, dest, bdef.routing_key, bdef.arguments)

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
        self.producers.close()
        for vhost in (broker.vhosts.values() if broker else ()):
            for q in vhost.queues.values():
                q.close()
        await self.messages.aclose()
        self.definitions.close()
        self.executors.shutdown()
