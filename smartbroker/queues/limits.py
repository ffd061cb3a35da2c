"""A classic queue's length limits (``x-max-length``, ``x-max-length-bytes``), as
RabbitMQ counts them: ready messages only (unacked ones do not count), bodies only."""

from __future__ import annotations

from smartbroker.message import Message
from smartbroker.queues.ready import PriorityReady, ReadyList
from smartbroker.queues.settings import QueueSettings


def would_overflow(settings: QueueSettings, ready: ReadyList | PriorityReady,
                   message: Message) -> bool:
    """Would enqueueing ``message`` go past a limit (reject-publish modes refuse it)?"""
    if settings.max_length is not None and ready.count >= settings.max_length:
        return True
    return (settings.max_length_bytes is not None
            and ready.bytes + len(message.body) > settings.max_length_bytes)


def over_limit(settings: QueueSettings, ready: ReadyList | PriorityReady) -> bool:
    """Past a limit now (drop-head drops from the head until it is not)."""
    return bool(ready.count) and (
        (settings.max_length is not None and ready.count > settings.max_length)
        or (settings.max_length_bytes is not None and ready.bytes > settings.max_length_bytes))
