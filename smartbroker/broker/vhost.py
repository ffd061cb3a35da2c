"""A virtual host: the exchanges, queues and bindings one AMQP connection works with.

Every declare/delete/bind rule and reply code here is RabbitMQ's. Queues are built by
their type's ``declare`` through the registry (``queues/types.py``) and used only
through the ``Queue`` interface; routing is ``broker/routing.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from smartbroker.broker.direct_reply import PREFIX as REPLY_PREFIX
from smartbroker.broker.equivalence import check_exchange_equivalent, check_queue_equivalent
from smartbroker.broker.exchange import Binding, Exchange, validate_exchange_arguments
from smartbroker.broker.limits import check_queue
from smartbroker.broker.policies import Policy, effective_policy
from smartbroker.broker.routing import alternate_exchange, route
from smartbroker.dlq.deadletter import DeadLetters
from smartbroker.errors import (
    ChannelError,
    access_refused,
    command_invalid,
    not_found,
    not_implemented,
    precondition_failed,
    resource_locked,
)
from smartbroker.exchanges import EXCHANGE_TYPES
from smartbroker.message import Message, has_sender_routing, with_sender_routing
from smartbroker.protocol.codec import FLAG_HEADERS
from smartbroker.queues.base import ACCEPTED, DeadLetter, Queue, QueueSpec, Storage
from smartbroker.queues.capabilities import require
from smartbroker.queues.types import declare_queue

PREDECLARED = {
    "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
    "amq.headers": "headers", "amq.match": "headers",
}


class Published:
    """What happened to one publish; truthy when it reached at least one queue.
    (A plain slotted class: this is built once per publish on the hot path.)"""

    __slots__ = ("routed", "accepted", "logs", "stored")

    def __init__(self, routed: bool, accepted: bool, logs: tuple[Any, ...]) -> None:
        self.routed = routed
        self.accepted = accepted  # no queue refused it (reject-publish overflow): else nack
        self.logs = logs  # written to these logs: confirm only after they are fsynced
        self.stored = bool(logs)

    def __bool__(self) -> bool:
        return self.routed


ROUTED = Published(True, True, ())
UNROUTED = Published(False, True, ())
REFUSED = Published(True, False, ())


def generated_name(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class VirtualHost:
    """``storage``: where durable queues persist (None: nothing survives a restart);
    ``listener``: the definitions recorder told about every definition change (None:
    nothing is recorded). Both given here by ``Persistence.vhost``, never set afterwards."""

    def __init__(self, name: str = "/", storage: Storage | None = None,
                 listener: Any = None) -> None:
        self.name = name
        self.storage = storage
        self.exchanges: dict[str, Exchange] = {"": Exchange("", "direct", durable=True)}
        for ex_name, type_name in PREDECLARED.items():
            self.exchanges[ex_name] = Exchange(ex_name, type_name, durable=True)
        self.queues: dict[str, Queue] = {}
        self.policies: dict[str, Policy] = {}
        self.store: Any = storage.store if storage is not None else None  # MessageStore
        self._stored: Published | None = None  # the result of a stored publish, shared
        self.listener = listener
        self.limits: dict[str, int] = {}  # max-connections, max-queues (broker/limits.py)
        self.replies: dict[str, Any] = {}  # direct reply-to consumers by token
        self.dead_letters = DeadLetters(self)  # this vhost's dead-letter trampoline
        self.on_queue_deleted: list[Callable[[Queue], None]] = []
        # builds the queue a declare asks for; cluster mode sets one that builds a proxy
        # (cluster/remote_queue.py) for a queue another node leads
        self.queue_factory: Callable[[QueueSpec, Any, Storage | None], Queue] = declare_queue

    # -- lookups -------------------------------------------------------------------------
    def where(self) -> str:
        return f"in vhost '{self.name}'"

    def exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise not_found(f"no exchange '{name}' {self.where()}")
        return ex

    def queue(self, name: str, owner: object | None = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise not_found(f"no queue '{name}' {self.where()}")
        self.check_exclusive(q, owner)
        return q

    def check_exclusive(self, q: Queue, owner: object | None) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise resource_locked(
                f"cannot obtain exclusive access to locked queue '{q.name}' {self.where()}. "
                "It could be originally declared on another connection or the exclusive "
                "property value does not match that of the original declaration.")

    # -- exchanges -----------------------------------------------------------------------
    def declare_exchange(self, name: str, type_name: str, *, passive: bool = False,
                         durable: bool = False, auto_delete: bool = False, internal: bool = False,
                         arguments: Mapping[str, Any] | None = None) -> Exchange:
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise not_found(f"no exchange '{name}' {self.where()}")
            return existing
        if existing is None and name.startswith("amq."):
            raise access_refused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        if type_name not in EXCHANGE_TYPES:
            raise command_invalid(f"unknown exchange type '{type_name}'")
        if existing is not None:
            check_exchange_equivalent(existing, self.where(), type_name, durable, auto_delete, internal,
                                            arguments or {})
            return existing
        validate_exchange_arguments(name, self.name, arguments or {})
        ex = Exchange(name, type_name, durable=durable, auto_delete=auto_delete,
                      internal=internal, arguments=arguments)
        self.exchanges[name] = ex
        if self.listener is not None:
            self.listener.exchange_declared(self.name, ex)
        return ex

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise access_refused(f"deletion of system exchange '{name}' {self.where()} not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            return  # RabbitMQ: deleting a missing exchange is not an error
        if if_unused and ex.bindings:
            raise precondition_failed(f"exchange '{name}' {self.where()} in use")
        self._drop_exchange(ex)

    def _drop_exchange(self, ex: Exchange) -> None:
        self.exchanges.pop(ex.name, None)
        if self.listener is not None:
            self.listener.exchange_deleted(self.name, ex)
        for binding in list(ex.bindings.values()):
            self._remove_binding(binding, cascade=False)
        for binding in list(ex.inbound):
            self._remove_binding(binding)

    # -- queues --------------------------------------------------------------------------
    def declare_queue(self, name: str, *, passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = False,
                      arguments: Mapping[str, Any] | None = None,
                      owner: object | None = None, server_named: bool = False) -> tuple[Queue, bool]:
        """Return (queue, created). ``server_named``: the name was generated (``amq.gen-``)."""
        arguments = dict(arguments or {})
        if passive:
            return self.queue(name, owner), False
        if name == "":
            name = generated_name("amq.gen-")
        elif name.startswith("amq.") and not server_named:
            raise access_refused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        existing = self.queues.get(name)
        if existing is not None:
            self.check_exclusive(existing, owner)
            check_queue_equivalent(existing, self.where(), durable, exclusive, auto_delete, arguments)
            return existing, False
        check_queue(self, name)
        policy = effective_policy(self.policies, name, "queue")
        spec = QueueSpec(name, self.name, durable, exclusive, auto_delete, arguments, owner,
                         policy.definition if policy else None)
        q = self.queue_factory(spec, self, self.storage)
        q.policy_name = policy.name if policy else None
        self.queues[name] = q
        self.exchanges[""].router.bind(q, name, {})
        if self.listener is not None:
            self.listener.queue_declared(self.name, q)
        return q, True

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False,
                     owner: object | None = None) -> int:
        q = self.queues.get(name)
        if q is None:
            return 0  # RabbitMQ: deleting a missing queue succeeds with 0 messages
        self.check_exclusive(q, owner)
        if (if_unused or if_empty) and not q.capabilities.delete_conditions:
            flag = "if-unused" if if_unused else "if-empty"  # RabbitMQ 3.10's quorum queues
            raise not_implemented(f"cannot delete queue '{name}' {self.where()}. queue.delete operations "
                                  f"with {flag} flag set are not supported by {q.capabilities.label}")
        if if_unused and q.consumer_count:
            raise precondition_failed(f"queue '{name}' {self.where()} in use")
        if if_empty and q.message_count:
            raise precondition_failed(f"queue '{name}' {self.where()} not empty")
        return self.drop_queue(q)

    def drop_queue(self, q: Queue) -> int:
        if self.queues.get(q.name) is not q:
            return 0
        del self.queues[q.name]
        self.exchanges[""].router.unbind(q, q.name, {})
        if self.listener is not None:
            self.listener.queue_deleted(self.name, q)
        for binding in list(q.bindings):
            self._remove_binding(binding)
        count = q.delete()
        for hook in self.on_queue_deleted:
            hook(q)
        return count

    # -- what queues need from their host (QueueHost) ------------------------------------
    def queue_unused(self, q: Queue) -> None:
        """Auto-delete (last consumer gone) or x-expires (unused for too long)."""
        self.drop_queue(q)

    def dead_letter(self, q: Queue, message: Message, reason: str) -> None:
        target = q.dead_letter_target
        if target is not None:
            self.dead_letters.send(message, q.name, reason, *target)

    def perform(self, actions: list[DeadLetter]) -> None:
        """Route the dead-letters a ``Queue.settle`` returned (channels and the management
        API settle; the vhost is their ``DeadLetterer``)."""
        for action in actions:
            self.dead_letter(action.queue, action.message, action.reason)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests): timers are driven by hand
            return None
        return loop.call_later(delay, callback)

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        q = self.queue(name, owner)
        require(q, "purge")
        return q.purge()

    # -- policies ------------------------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        self.policies[policy.name] = policy
        if self.listener is not None:
            self.listener.policy_set(self.name, policy)
        self._reapply_policies()

    def clear_policy(self, name: str) -> bool:
        if self.policies.pop(name, None) is None:
            return False
        if self.listener is not None:
            self.listener.policy_cleared(self.name, name)
        self._reapply_policies()
        return True

    def _reapply_policies(self) -> None:
        for q in list(self.queues.values()):
            policy = effective_policy(self.policies, q.name, "queue")
            q.apply_policy(policy.name if policy else None, policy.definition if policy else None)

    alternate_exchange = alternate_exchange  # broker/routing.py
    route = route  # broker/routing.py; ``publish`` calls it directly (no extra frame)

    # -- bindings ------------------------------------------------------------------------
    def bind(self, source_name: str, destination: Queue | Exchange, routing_key: str,
             arguments: Mapping[str, Any]) -> None:
        if source_name == "":
            raise access_refused("operation not permitted on the default exchange")
        source = self.exchange(source_name)
        source.router.validate_binding(routing_key, arguments)
        binding = Binding(source, destination, routing_key, dict(arguments))
        if source.add_binding(binding):
            destination_bindings(destination).add(binding)
            if self.listener is not None:
                self.listener.binding_added(self.name, binding)

    def unbind(self, source_name: str, destination: Queue | Exchange | None, routing_key: str,
               arguments: Mapping[str, Any]) -> None:
        if source_name == "":
            raise access_refused("operation not permitted on the default exchange")
        source = self.exchanges.get(source_name)
        if source is None or destination is None:
            return  # RabbitMQ: unbinding something that does not exist succeeds
        binding = source.bindings.get(Binding(source, destination, routing_key, dict(arguments)).key)
        if binding is not None:
            self._remove_binding(binding)

    def _remove_binding(self, binding: Binding, cascade: bool = True) -> None:
        source = binding.source
        if source.remove_binding(binding) is None:
            return
        destination_bindings(binding.destination).discard(binding)
        if self.listener is not None:
            self.listener.binding_removed(self.name, binding)
        if cascade and source.auto_delete and not source.bindings and source.name in self.exchanges:
            self._drop_exchange(source)

    # -- publishing ----------------------------------------------------------------------
    def publish(self, msg: Message) -> Published:
        """Route ``msg`` from its exchange and enqueue it everywhere it goes: the one entry
        point for AMQP publishes, dead-letters, redrives and HTTP publishes."""
        ex = self.exchanges.get(msg.exchange)
        keys = [msg.routing_key]
        if msg.flags & FLAG_HEADERS and has_sender_routing(msg.header_payload):
            msg, keys = with_sender_routing(msg)
        if ex is None:
            return UNROUTED
        if ex.name == "" and len(keys) == 1:
            q = self.queues.get(msg.routing_key)
            if q is None:
                return self._direct_reply(msg)
            if q.uses_store and msg.persistent and self.store is not None:
                return self._publish_stored(q, msg)
            result = q.publish(msg)
            if result is ACCEPTED:
                return ROUTED  # the common transient case
            if result.sync is None:
                return ROUTED if result.accepted else REFUSED
            answer = result.answer  # a stream's result is one per partition: so is this
            if answer is None:
                answer = result.answer = Published(True, result.accepted, (result.sync,))
            return answer
        queues = route(self, ex, msg, keys)
        if not queues:
            return UNROUTED
        accepted, logs = self.enqueue(queues, msg)
        if not logs:
            return ROUTED if accepted else REFUSED
        return Published(True, accepted, logs)

    def _publish_stored(self, q: Queue, msg: Message) -> Published:
        """A persistent message to one durable classic queue (the confirms benchmark case)."""
        store = self.store
        assert store is not None
        sid = store.enqueue(self.name, (q.name,), msg)
        stored = self._stored
        if stored is None or stored.logs[0] is not store.log:
            stored = self._stored = Published(True, True, (store.log,))
        if q.publish(msg, sid).accepted:
            return stored
        store.forget(self.name, q.name, sid)
        return Published(True, False, stored.logs)

    def _direct_reply(self, msg: Message) -> Published:
        """Default exchange, no such queue: maybe a reply to a direct reply-to consumer."""
        rk = msg.routing_key
        if not rk.startswith(REPLY_PREFIX):
            return UNROUTED
        reply = self.replies.get(rk[len(REPLY_PREFIX):])
        if reply is None:  # cluster mode: maybe a channel of another node (its token says)
            forward = getattr(self.replies, "forward", None)
            return UNROUTED if forward is None else forward(self, msg)
        reply.deliver(msg)
        return ROUTED

    def enqueue(self, queues: Iterable[Queue], msg: Message) -> tuple[bool, tuple[Any, ...]]:
        """Put ``msg`` on each queue, persisting it once in the message store for the queues
        that use it (streams append to their own logs). Returns (every queue accepted it,
        the logs that must be fsynced before it is confirmed)."""
        store = self.store
        store_id = None
        if store is not None and msg.persistent:
            durable = tuple(q.name for q in queues if q.uses_store)
            if durable:
                store_id = store.enqueue(self.name, durable, msg)
        accepted = True
        logs = [store.log] if store_id is not None else []
        for q in queues:
            sid = store_id if q.uses_store else None
            result = q.publish(msg, sid)
            if not result.accepted:
                accepted = False
                if sid is not None:
                    store.forget(self.name, q.name, sid)
            elif result.sync is not None:
                logs.append(result.sync)
        return accepted, tuple(logs)


def destination_bindings(destination: Any) -> set[Binding]:
    return destination.inbound if isinstance(destination, Exchange) else destination.bindings


__all__ = ["ChannelError", "VirtualHost", "generated_name"]
