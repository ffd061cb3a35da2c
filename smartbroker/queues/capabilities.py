"""What a queue type supports, and the one place an unsupported operation is refused.

A type declares its ``Capabilities`` (accepted ``x-`` arguments, which operations work);
``require``, ``check_consume`` and ``check_arguments`` read the flags and raise
RabbitMQ's reply (540 NOT_IMPLEMENTED, 406 PRECONDITION_FAILED) for what it lacks, so
no channel or handler tests a queue's type by name. Split from ``base.py``, which keeps
the ``Queue`` protocol and the values queues exchange with the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING

from smartbroker.errors import AMQPError, not_implemented, precondition_failed

if TYPE_CHECKING:
    from smartbroker.queues.base import Queue, QueueSpec


@dataclass(frozen=True)
class Capabilities:
    """What a queue type accepts: its ``x-`` arguments and which operations work. The
    flags are read in ONE place, ``require`` below (and ``check_consume``), which raises
    RabbitMQ's reply for what the type does not support; ``arguments`` in
    ``check_arguments``."""

    # the x- arguments a declare may carry (``rabbit_type`` names the type in the 406);
    # None: any, as RabbitMQ's classic type keeps unknown ones
    arguments: frozenset[str] | None = None
    rabbit_type: str = "rabbit_classic_queue"
    supports_get: bool = True
    supports_no_ack: bool = True
    equivalence_arguments: frozenset[str] = field(default_factory=frozenset)
    supports_reject: bool = True  # basic.nack / basic.reject
    supports_purge: bool = True
    requires_prefetch: bool = False  # consumers must have basic.qos credit
    uses_message_store: bool = True  # persistent messages go to the vhost's message store
    offset_log: bool = False  # read by offset, with consumer groups (``groups``; /api/streams)
    supports_browse: bool = True  # a ``ready`` list operator tools browse and take from (dlq)
    label: str = "classic queues"  # as RabbitMQ names the type in its 540 replies
    # False for quorum: a '' name, a global basic.qos consumer, queue.delete if-unused/empty
    server_named: bool = True
    supports_global_qos: bool = True
    delete_conditions: bool = True


# operation -> (the capability that allows it, what RabbitMQ's 540 reply calls it)
OPERATIONS: dict[str, tuple[Callable[[Capabilities], bool], str]] = {
    "get": (attrgetter("supports_get"), "basic.get"),
    "purge": (attrgetter("supports_purge"), "queue.purge"),
    "reject": (attrgetter("supports_reject"), "basic.nack and basic.reject"),
    "no_ack": (attrgetter("supports_no_ack"), "automatic acknowledgement"),
}


def refused(queue: Queue, operation: str) -> AMQPError:
    """RabbitMQ's reply (540 NOT_IMPLEMENTED) for an operation the queue type lacks, as
    rabbit_stream_queue answers dequeue, purge and reject (texts checked on 3.10.8)."""
    what = OPERATIONS[operation][1]
    return not_implemented(f"{what} not supported by {queue.capabilities.label} queue "
                           f"'{queue.name}' in vhost '{queue.vhost}'")


def require(queue: Queue, operation: str) -> None:
    """Raise ``refused`` unless the queue's capabilities allow ``operation``."""
    allowed, _what = OPERATIONS[operation]
    if not allowed(queue.capabilities):
        raise refused(queue, operation)


def check_arguments(capabilities: Capabilities, spec: QueueSpec) -> None:
    """Refuse a declare's ``x-`` argument the type does not accept (406, RabbitMQ 3.10.8's
    text), before any of its values is looked at."""
    accepted = capabilities.arguments
    if accepted is None:
        return
    for arg in spec.arguments:
        if arg.startswith("x-") and arg not in accepted:
            raise precondition_failed(f"invalid arg '{arg}' for queue '{spec.name}' in vhost "
                                      f"'{spec.vhost}' of queue type {capabilities.rabbit_type}")


def check_consume(queue: Queue, no_ack: bool, prefetch: int, grouped: bool = False) -> None:
    """What a type's capabilities refuse in ``basic.consume``: a log needs credit (406,
    RabbitMQ's text) and acks (540). ``grouped``: a consumer-group member, which commits
    offsets itself and so may consume with no_ack (our extension)."""
    caps = queue.capabilities
    if caps.requires_prefetch and prefetch == 0 and not (no_ack and grouped):
        raise precondition_failed(f"consumer prefetch count is not set for "
                                  f"'queue '{queue.name}' in vhost '{queue.vhost}''")
    if no_ack and not caps.supports_no_ack and not grouped:
        raise refused(queue, "no_ack")
