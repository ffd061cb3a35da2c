"""Helpers shared by the dead-lettering integration tests (test_deadletter_*.py)."""

from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel

from .helpers import wait_until
from .lifecycle_helpers import Delivery


def get_one(ch: BlockingChannel, queue: str, timeout: float = 5.0) -> Delivery:
    """basic.get (no ack) ``queue`` until a message is there (the queue may be fed by
    dead-lettering, which is asynchronous)."""
    box: list[Delivery] = []

    def poll() -> bool:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is not None:
            box.append(Delivery(method, props, body))
        return bool(box)

    wait_until(ch.connection, poll, timeout)
    return box[0]
