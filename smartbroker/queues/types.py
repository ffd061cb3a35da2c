"""The queue types by ``x-queue-type``, as ``exchanges.EXCHANGE_TYPES``: adding a type is
adding a module with a ``declare`` and registering it here. The vhost builds every queue
through ``declare_queue`` and never names a type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartbroker.errors import precondition_failed
from smartbroker.queues.base import Queue, QueueHost, QueueSpec, QueueType, Storage
from smartbroker.queues.classic import ClassicQueue
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.stream import StreamQueue

QUEUE_TYPES: dict[str, type[QueueType]] = {
    "classic": ClassicQueue, "quorum": QuorumQueue, "stream": StreamQueue,
}
DEFAULT_TYPE = "classic"


def queue_type(arguments: Mapping[str, Any]) -> type[QueueType]:
    """The type ``x-queue-type`` names; an unknown or malformed one goes to the default
    type, whose argument validation refuses it with RabbitMQ's 406."""
    kind = arguments.get("x-queue-type")
    if isinstance(kind, bytes):
        kind = kind.decode(errors="replace")
    found = QUEUE_TYPES.get(kind) if isinstance(kind, str) else None
    return found or QUEUE_TYPES[DEFAULT_TYPE]


def declare_queue(spec: QueueSpec, host: QueueHost, storage: Storage | None) -> Queue:
    """Validate and build the queue a queue.declare asks for."""
    return queue_type(spec.arguments).declare(spec, host, storage)


def check_server_named(arguments: Mapping[str, Any]) -> None:
    """A queue.declare with an empty name, for a type that has no server-named queues
    (quorum): RabbitMQ's 406 (rabbit_channel, 3.10.8)."""
    caps = queue_type(arguments).capabilities
    if not caps.server_named:
        raise precondition_failed(f"Cannot declare a server-named queue for type {caps.rabbit_type}")
