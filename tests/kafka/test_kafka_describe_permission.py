"""Kafka's DESCRIBE and CREATE refusals, found by aiokafka's test_sasl deny tests: a topic
the client may not auto-create is TOPIC_AUTHORIZATION_FAILED in Metadata (not
UNKNOWN_TOPIC_OR_PARTITION, which made producers retry until their timeout); ListOffsets
and OffsetFetch need DESCRIBE (here: any permission on the topic), so a user denied only
read gets its offsets and then TOPIC_AUTHORIZATION_FAILED from Fetch, as from Kafka."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.sasl_helpers import PASSWORD, add_user

pytestmark = pytest.mark.extension  # permissions are smartbroker's users' (no Kafka ACLs)


def _sasl(broker: BrokerProcess, user: str) -> dict:
    return {"bootstrap_servers": broker.kafka_bootstrap, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN", "sasl_plain_username": user,
            "sasl_plain_password": PASSWORD}


def test_auto_creation_refused_is_topic_authorization_failed(kafka_broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError

    add_user(kafka_broker, "nocreate", permissions=("^$", ".*", ".*"))

    async def main() -> None:
        producer = AIOKafkaProducer(**_sasl(kafka_broker, "nocreate"), request_timeout_ms=5000)
        await producer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(f"nocreate-{uuid.uuid4().hex[:8]}", b"x")
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_denied_read_still_lists_offsets_and_fetch_is_refused(kafka_broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import TopicAuthorizationFailedError

    topic = f"noread-{uuid.uuid4().hex[:8]}"
    add_user(kafka_broker, "noread", permissions=(".*", ".*", "^$"))

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"one")
            await producer.send_and_wait(topic, b"two")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**_sasl(kafka_broker, "noread"), group_id=f"g-{topic}",
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            assert await consumer.end_offsets([tp]) == {tp: 2}  # ListOffsets: DESCRIBE
            assert await consumer.committed(tp) is None  # OffsetFetch: DESCRIBE
            consumer.assign([tp])
            with pytest.raises(TopicAuthorizationFailedError):
                await consumer.getone()  # Fetch: READ
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
