"""The queue types by ``x-queue-type``, as ``exchanges.EXCHANGE_TYPES``: adding a type is
adding a module with a ``declare`` and registering it here. The vhost builds every queue
through ``declare_queue`` and never names a type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from smartbroker.errors import precondition_failed
from smartbroker.queues.arguments import check_replicated_properties
from smartbroker.queues.base import Capabilities, Queue, QueueHost, QueueSpec, QueueType, Storage
from smartbroker.queues.classic import ClassicQueue
from smartbroker.queues.stream import StreamQueue


class QuorumQueue:
    """``x-queue-type: quorum`` is served by a classic queue (one node: no replicas), with
    the declare checks RabbitMQ's quorum type makes."""

    capabilities: ClassVar[Capabilities] = ClassicQueue.capabilities

    @classmethod
    def declare(cls, spec: QueueSpec, host: QueueHost, storage: Storage | None = None) -> Queue:
        if "x-max-priority" in spec.arguments:
            raise precondition_failed(f"invalid arg 'x-max-priority' for queue '{spec.name}' in "
                                      f"vhost '{spec.vhost}' of queue type rabbit_quorum_queue")
        check_replicated_properties(spec.name, spec.vhost, spec.durable, spec.exclusive,
                                    spec.auto_delete)
        return ClassicQueue.declare(spec, host, storage)


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
