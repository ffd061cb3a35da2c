"""Producing records with a real Kafka client, for tests that then read them elsewhere
(AMQP readers, other Kafka clients): what each record's delivery report said."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from smartbroker.launcher import BrokerProcess

Header = tuple[str, bytes | None]
Rec = tuple[bytes | None, bytes | None, Sequence[Header]]  # key, value, headers


def confluent_produce(broker: BrokerProcess, topic: str, records: Sequence[Rec], *,
                      partition: int | None = None, timestamps: Sequence[int] | None = None,
                      **config: Any) -> list[tuple[int, int]]:
    """Produce ``records`` with confluent-kafka (idempotence off unless ``config`` turns
    it on; ``config`` adds or overrides producer settings) and return the (partition,
    offset) each one's delivery report gave, in order. A failed delivery fails the test."""
    ck = pytest.importorskip("confluent_kafka")
    landed: dict[int, tuple[int, int]] = {}
    errors: list[Any] = []

    def report(i: int) -> Any:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                landed[i] = (msg.partition(), msg.offset())
        return done

    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap,
                            "enable.idempotence": False, **config})
    for i, (key, value, headers) in enumerate(records):
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if timestamps is not None:
            extra["timestamp"] = timestamps[i]
        producer.produce(topic, key=key, value=value, headers=list(headers),
                         on_delivery=report(i), **extra)
    assert producer.flush(30) == 0
    assert errors == []
    return [landed[i] for i in range(len(records))]
