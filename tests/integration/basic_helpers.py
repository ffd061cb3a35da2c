"""Helpers shared by the basic.* integration tests (test_basic_*.py): a consume
callback that records deliveries, and publishing on a confirm-mode channel."""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

Delivery = tuple[Any, pika.BasicProperties, bytes]


class Collector:
    """basic_consume callback that records (method, properties, body)."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []

    def __call__(self, _ch: BlockingChannel, method: Any, props: pika.BasicProperties, payload: bytes) -> None:
        self.items.append((method, props, payload))

    @property
    def bodies(self) -> list[bytes]:
        return [b for _, _, b in self.items]


def publish_confirmed(ch: BlockingChannel, queue: str, bodies: list[bytes]) -> None:
    """Publish on a confirm-mode channel, so the messages are enqueued when this returns."""
    for b in bodies:
        ch.basic_publish("", queue, b)
