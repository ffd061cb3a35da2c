"""An in-memory broker with the queues a Kafka handler test needs (no data directory, no
socket), shared by the unit tests of smartbroker/kafka."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka.handlers import Session

SESSION = Session("127.0.0.1:50000", "127.0.0.1")
THREE_PARTITIONS = {"x-queue-type": "stream", "x-partitions": 3}
ONE_PARTITION = {"x-queue-type": "stream"}


def broker_with(queues: Mapping[str, Mapping[str, Any] | None]) -> Iterator[Broker]:
    """Yield a broker whose vhost "/" has ``queues`` (name -> arguments; None: a classic
    queue), then close the streams' logs. For ``yield from`` in a fixture."""
    broker = Broker(Config())
    vhost = broker.vhosts["/"]
    for name, arguments in queues.items():
        vhost.declare_queue(name, durable=True, arguments=dict(arguments or {}))
    yield broker
    for q in list(vhost.queues.values()):
        if q.capabilities.offset_log:
            q.close()
