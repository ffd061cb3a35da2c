"""The definitions store in cluster mode: etcd is the source of truth, the node keeps a
watched local copy (``etcd_view.WatchedPrefix`` over ``defs/``).

Each writer of ``DefinitionStoreAPI`` becomes puts and deletes of the keys that
``definitions_keys`` lays out; what a delete takes along (a queue's bindings, a user's
permissions) is found in the local copy. Writers return at once: the change is in the
local copy, and ``pending()`` is the future of its etcd commit, which the front end awaits
before it answers -ok. Changes made by OTHER nodes reach ``subscribe``d callbacks as
``DefinitionChange``s with decoded records (cluster/definitions_sync.py applies them to
the running broker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from smartbroker.cluster import definitions_keys as K
from smartbroker.cluster.etcd_client import Delete, EtcdClient, Put
from smartbroker.cluster.etcd_view import WatchedPrefix
from smartbroker.store.definitions import (
    BindingDef,
    Definitions,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
    dumps,
)

log = logging.getLogger("smartbroker.cluster.definitions")


@dataclass(frozen=True, slots=True)
class DefinitionChange:
    """A definition another node changed: ``old`` None = created, ``new`` None = deleted.
    Records are what ``definitions_keys.decode`` returns for ``table``."""
    table: str
    old: Any
    new: Any


class EtcdDefinitionStore:
    """``DefinitionStoreAPI`` on etcd. ``await open()`` before the broker reads it."""

    commits_later = True  # a change reaches etcd after its writer returned: see pending()
    # transient (non-durable, non-exclusive) queues and exchanges, and bindings to or from
    # them, are kept too, on the lease of the node that declared them: every node sees
    # them, and they vanish with their node (RabbitMQ deletes a dead node's transients)
    keeps_transient = True

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.lease: Callable[[], int] = lambda: 0  # the node's membership lease, once a member
        self.node = ""  # this node's name (ClusterNode sets it): owner of its exclusive queues
        self.view = WatchedPrefix(client, K.ROOT)
        self.timeout = 5.0  # seconds pending() waits (config.cluster_metadata_timeout)
        self._raw: asyncio.Future[int] | None = None  # the view's future pending() bounds
        self._bounded: asyncio.Future[int] | None = None
        self._callbacks: list[Callable[[DefinitionChange], None]] = []
        # once the node links to others: pending() also waits until they applied it
        # (cluster/definitions_seen.py), as RabbitMQ's -ok comes after every node has it
        self.seen: Callable[[int], Awaitable[None]] | None = None
        self.view.subscribe(self._changed)

    async def open(self) -> EtcdDefinitionStore:
        await self.view.open()
        return self

    def subscribe(self, callback: Callable[[DefinitionChange], None]) -> None:
        self._callbacks.append(callback)

    def _changed(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        try:
            table, old_record = K.decode(key, old) if old is not None else ("", None)
            table, new_record = K.decode(key, new) if new is not None else (table, None)
        except ValueError as exc:
            log.error("ignoring a definition change: %s", exc)
            return
        change = DefinitionChange(table, old_record, new_record)
        for callback in self._callbacks:
            callback(change)

    def transaction(self) -> AbstractContextManager[None]:
        """One etcd transaction when it fits in one; an exception drops the block."""
        return self.view.transaction()

    def batch(self) -> AbstractContextManager[None]:
        """As ``transaction``, but what the block wrote is kept even if it raises."""
        return self.view.batch()

    def pending(self) -> asyncio.Future[int] | None:
        """The future of the last change's etcd commit (its revision); None when done.
        Bounded by ``timeout``: then it fails with TimeoutError (the front ends answer
        RabbitMQ's "metadata store operation timed out") while the change stays queued
        and reaches etcd once it answers, as a timed-out Khepri command may still apply.
        A waiter that comes after a timeout gets a fresh bound."""
        last = self.view.pending()
        if last is None:
            return None
        bounded = self._bounded
        if self._raw is not last or bounded is None or bounded.done():
            bounded = self._bounded = _bounded(last, self.timeout, self.seen)
            self._raw = last
        return bounded

    async def flush(self) -> None:
        await self.view.flush()

    # -- writers (the DefinitionStoreAPI) ------------------------------------------------
    def save_vhost(self, v: VHostDef) -> None:
        self._put(K.vhost(v))

    def delete_vhost(self, name: str) -> None:
        with self.view.transaction():
            self.view.write(*(Delete(K.prefix(t, name), prefix=True) for t in
                          ("exchanges", "queues", "bindings", "policies", "permissions",
                           "topic_permissions")), Delete(K.key("vhosts", name)))

    def save_user(self, u: UserDef) -> None:
        self._put(K.user(u))

    def delete_user(self, name: str) -> None:
        """As SQLite: credentials, permissions and topic permissions go, limits stay."""
        owned = [k for t in ("permissions", "topic_permissions") for k in self.view.view(K.prefix(t))
                 if K.split(k)[1][1] == name]
        self.view.write(Delete(K.key("users", name)), Delete(K.key("user_scram", name)),
                    *(Delete(k) for k in owned))

    def save_user_limits(self, name: str, limits: dict[str, int]) -> None:
        if limits:
            self._put(K.user_limits(name, limits))
        else:
            self.view.write(Delete(K.key("user_limits", name)))

    def load_user_limits(self) -> dict[str, dict[str, int]]:
        return dict(self._records("user_limits"))

    def save_user_scram(self, name: str, rows: dict[str, tuple[str, int, str, str]]) -> None:
        if rows:
            self._put(K.user_scram(name, rows))
        else:
            self.view.write(Delete(K.key("user_scram", name)))

    def load_user_scram(self) -> dict[str, dict[str, tuple[str, int, str, str]]]:
        return dict(self._records("user_scram"))

    def save_permission(self, p: PermissionDef) -> None:
        self._put(K.permission(p))

    def delete_permission(self, user: str, vhost: str) -> None:
        self.view.write(Delete(K.key("permissions", vhost, user)))

    def save_topic_permission(self, p: dict[str, str]) -> None:
        self._put(K.topic_permission(p))

    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None:
        self.view.write(Delete(K.key("topic_permissions", vhost, user, exchange)))

    def load_topic_permissions(self) -> list[dict[str, str]]:
        return sorted(self._records("topic_permissions"),
                      key=lambda p: (p["user"], p["vhost"], p["exchange"]))

    def save_exchange(self, e: ExchangeDef) -> None:
        self._put(K.exchange(e), transient=not e.durable)

    def create_exchange(self, e: ExchangeDef) -> None:
        """As ``save_exchange``, for one the broker just created: see ``_create``."""
        self._create(K.exchange(e), transient=not e.durable)

    def delete_exchange(self, vhost: str, name: str) -> None:
        """Also the bindings from it (one prefix) and to it (found in the local view)."""
        to_it = self._bindings_to(vhost, "exchange", name)
        self.view.write(Delete(K.key("exchanges", vhost, name)),
                    Delete(K.prefix("bindings", vhost, name), prefix=True),
                    *(Delete(k) for k in to_it))

    def save_queue(self, q: QueueDef) -> None:
        self._put(K.queue(q), transient=not q.durable)

    def create_queue(self, q: QueueDef) -> None:
        """As ``save_queue``, for one the broker just created: see ``_create``."""
        self._create(K.queue(q), transient=not q.durable)

    def save_exclusive_queue(self, q: QueueDef, connection: str) -> None:
        """An exclusive queue, on this node's lease and marked with its owner: the other
        nodes route publishes to it and refuse everything else with 405, as RabbitMQ's
        cluster-wide exclusive queues; it goes with its connection or its node."""
        record = K.ExclusiveQueueDef(q.vhost, q.name, q.durable, q.auto_delete, q.arguments,
                                     q.type, self.node, connection)
        self._create(K.queue(record), transient=True)

    def delete_queue(self, vhost: str, name: str) -> None:
        to_it = self._bindings_to(vhost, "queue", name)
        self.view.write(Delete(K.key("queues", vhost, name)), *(Delete(k) for k in to_it))

    def _bindings_to(self, vhost: str, kind: str, name: str) -> list[bytes]:
        return [k for k in self.view.view(K.prefix("bindings", vhost))
                if K.split(k)[1][2:4] == [kind, name]]

    def save_binding(self, b: BindingDef) -> None:
        ends = (K.key("exchanges", b.vhost, b.source),
                K.key("exchanges" if b.destination_type == "exchange" else "queues", b.vhost,
                      b.destination))
        self._put(K.binding(b), transient=any(self._transient(k) for k in ends))

    def _transient(self, key: bytes) -> bool:
        """The definition at ``key`` is a transient one (built-in exchanges are absent)."""
        raw = self.view.get(key)
        if raw is None:
            return False
        try:
            record = K.decode(key, raw)[1]
        except ValueError:
            return False
        return not record.durable or isinstance(record, K.ExclusiveQueueDef)

    def delete_binding(self, b: BindingDef) -> None:
        self.view.write(Delete(K.binding_key(b)))

    def save_policy(self, p: PolicyDef) -> None:
        self._put(K.policy(p))

    def delete_policy(self, vhost: str, name: str) -> None:
        self.view.write(Delete(K.key("policies", vhost, name)))

    def _put(self, entry: K.Entry, transient: bool = False) -> None:
        self.view.write(Put(entry.key, entry.value, self.lease() if transient else 0))

    def _create(self, entry: K.Entry, transient: bool) -> None:
        """A queue or exchange the broker just created (the recorder calls ``create_*``
        only then: a redeclare writes nothing) is written only if etcd does not have it
        (``save_*`` replace, as SQLite's do): another node
        may have declared it a moment ago, before this broker applied it (even if our view
        has it already, the sync applies it later in this loop pass). Then ``pending()``
        fails with ``CreateConflict``: the front end catches up and runs the declare again
        (405, 406 or declare-ok, as one node), as RabbitMQ's Khepri refuses the second."""
        self.view.write(Put(entry.key, entry.value, self.lease() if transient else 0),
                        absent=True)

    def load_all(self) -> Definitions:
        """What restore declares: exclusive queues (and bindings to them) are left out,
        being another connection's (``exclusive_definitions`` has them)."""
        r = self._records
        every = r("queues")
        queues = [q for q in every if not isinstance(q, K.ExclusiveQueueDef)]
        skipped = {(q.vhost, q.name) for q in every if isinstance(q, K.ExclusiveQueueDef)}
        return Definitions(
            vhosts=sorted(r("vhosts"), key=lambda d: d.name),
            users=sorted(r("users"), key=lambda d: d.name),
            permissions=sorted(r("permissions"), key=lambda d: (d.user, d.vhost)),
            exchanges=sorted(r("exchanges"), key=lambda d: (d.vhost, d.name)),
            queues=sorted(queues, key=lambda d: (d.vhost, d.name)),
            bindings=sorted((b for b in r("bindings") if not _to_exclusive(b, skipped)),
                            key=lambda d: (d.vhost, d.source, d.destination, d.routing_key,
                                           dumps(d.arguments))),
            policies=sorted(r("policies"), key=lambda d: (d.vhost, d.name)))

    def exclusive_definitions(self) -> tuple[list[K.ExclusiveQueueDef], list[BindingDef]]:
        """Every node's exclusive queues and the bindings to them (not in ``load_all``)."""
        queues = [q for q in self._records("queues") if isinstance(q, K.ExclusiveQueueDef)]
        names = {(q.vhost, q.name) for q in queues}
        return queues, [b for b in self._records("bindings") if _to_exclusive(b, names)]

    def _records(self, table: str, under: bytes = b"") -> list[Any]:
        out = []
        for k, v in self.view.view(K.prefix(table) + under).items():
            try:
                out.append(K.decode(k, v)[1])
            except ValueError as exc:
                log.error("skipping definition: %s", exc)
        return out

    def close(self) -> None:
        self.view.close()

    async def aclose(self) -> None:
        """Send what is queued (for up to the client's timeout), then stop."""
        await self.view.aclose()


def _to_exclusive(b: BindingDef, exclusive: set[tuple[str, str]]) -> bool:
    return b.destination_type == "queue" and (b.vhost, b.destination) in exclusive


def _bounded(future: asyncio.Future[int], seconds: float,
             seen: Callable[[int], Awaitable[None]] | None = None) -> asyncio.Future[int]:
    """``future``'s outcome, or TimeoutError after ``seconds`` (``future`` itself is left
    alone: the writer still resolves it, and other waiters may still need it). With
    ``seen``, a committed revision is given once ``seen(revision)`` returned."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[int] = loop.create_future()

    def expire() -> None:
        if not out.done():
            out.set_exception(TimeoutError(
                f"the metadata store operation timed out (etcd did not commit it within "
                f"{seconds:g} s)"))

    timer = loop.call_later(seconds, expire)

    def give(revision: int) -> None:
        if not out.done():
            out.set_result(revision)

    def given(revision: int, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("waiting for the other nodes to apply revision %d failed: %r",
                      revision, exc)
        give(revision)

    def settle(done: asyncio.Future[int]) -> None:
        timer.cancel()
        if out.done():
            return
        if done.cancelled():
            out.cancel()
        elif (exc := done.exception()) is not None:
            out.set_exception(exc)
        elif seen is None:
            give(done.result())
        else:
            revision = done.result()
            task = loop.create_task(seen(revision))
            task.add_done_callback(lambda t: given(revision, t))

    future.add_done_callback(settle)
    out.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"
    return out
