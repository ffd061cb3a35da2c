"""Topic-config helpers the Kafka config tests share: create a one-partition topic with
configs, read its configs back, and change one incrementally (confluent-kafka's
AdminClient, as a Kafka user would)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

cka = pytest.importorskip("confluent_kafka.admin")


def create_topic(admin: Any, config: dict[str, str], prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([cka.NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    return topic


def described(admin: Any, topic: str) -> dict[str, Any]:
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(30)


def incremental(admin: Any, topic: str, name: str, value: str | None, op: Any) -> None:
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry(name, value, incremental_operation=op)])
    admin.incremental_alter_configs([res])[res].result(30)
