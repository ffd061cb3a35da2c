"""Kafka's group admin APIs through real admin clients, over both protocols' groups: a
kafka-python consumer group (Kafka members), an AMQP x-consumer-group group and a group
known only by committed offsets are listed, described and deleted by kafka-python's
KafkaAdminClient and confluent-kafka's AdminClient; a group's members come from one
protocol at a time (an AMQP consumer joining a Kafka-held group is refused 405)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from tests.conftest import BrokerProcess
from tests.kafka.group_helpers import quick_rebalance_broker, wait_for


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with quick_rebalance_broker("smartbroker-kafka-group-admin-", 100) as proc:
        yield proc


@pytest.fixture
def topic(broker: BrokerProcess) -> str:
    """A two-partition stream declared over AMQP, with two messages."""
    name = f"adm-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream", "x-partitions": 2})
    ch.confirm_delivery()
    for i in range(2):
        ch.basic_publish("", name, b"m%d" % i)
    conn.close()
    return name


@contextmanager
def kafka_member(broker: BrokerProcess, group: str, topic: str) -> Iterator[Any]:
    """A kafka-python consumer of ``topic`` in ``group``, once it has its partitions."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id=group,
                             client_id="kp-member", session_timeout_ms=10000,
                             heartbeat_interval_ms=500, fetch_max_wait_ms=100)
    try:
        consumer.subscribe([topic])
        wait_for(lambda: consumer.poll(timeout_ms=50), lambda: consumer.assignment(),
                 "an assignment")
        consumer.commit()
        yield consumer
    finally:
        consumer.close()


@contextmanager
def amqp_member(broker: BrokerProcess, group: str, topic: str) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        # from the end: nothing is delivered (pika would reject unhandled deliveries at
        # close, which a stream refuses)
        ch.basic_consume(topic, lambda *a: None, arguments={"x-consumer-group": group,
                                                            "x-stream-offset": "next"})
        yield ch
    finally:
        conn.close()


def offsets_only(broker: BrokerProcess, group: str, topic: str) -> None:
    """``group`` commits offset 1 of partition 0 (a "simple" consumer, no membership)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        c.close()


def test_kafka_python_admin_list_describe_delete(broker: BrokerProcess, topic: str) -> None:
    from kafka import KafkaAdminClient, TopicPartition

    kg, ag, og = (f"{k}-{uuid.uuid4().hex[:6]}" for k in ("kg", "ag", "og"))
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
    offsets_only(broker, og, topic)
    try:
        with kafka_member(broker, kg, topic), amqp_member(broker, ag, topic):
            ours = {g["group_id"]: (g["protocol_type"], g["group_state"])
                    for g in admin.list_groups() if g["group_id"] in (kg, ag, og)}
            assert ours == {kg: ("consumer", "Stable"), ag: ("consumer", "Stable"),
                            og: ("", "Empty")}
            empty = {g["group_id"] for g in admin.list_groups(states_filter=["Empty"])}
            assert og in empty and not {kg, ag} & empty

            described = admin.describe_groups([kg, ag, og, "nope-" + kg])
            k = described[kg]
            assert (k["group_state"], k["protocol_data"], k["error"]) == ("Stable", "range", None)
            [member] = k["members"]
            assert (member["client_id"], member["client_host"]) == ("kp-member", "/127.0.0.1")
            assert member["member_assignment"]["assigned_partitions"] == [
                {"topic": topic, "partitions": [0, 1]}]
            a = described[ag]
            assert (a["group_state"], a["protocol_data"]) == ("Stable", "amqp-cooperative")
            [amqp] = a["members"]
            assert amqp["client_host"] == "/127.0.0.1"
            assert amqp["member_metadata"]["topics"] == [topic]
            assert amqp["member_assignment"]["assigned_partitions"] == [
                {"topic": topic, "partitions": [0, 1]}]
            assert (described[og]["group_state"], described[og]["members"]) == ("Empty", [])
            assert described["nope-" + kg]["group_state"] == "Dead"

            assert admin.delete_groups([kg, ag]) == {kg: "NonEmptyGroupError",
                                                     ag: "NonEmptyGroupError"}
            refused = admin.delete_group_offsets(kg, [TopicPartition(topic, 0)])
            assert refused[TopicPartition(topic, 0)].__name__ == "GroupSubscribedToTopicError"

        wait_for(lambda: time.sleep(0.05),
                 lambda: admin.describe_groups([kg])[kg]["group_state"] == "Empty", "kg empty")
        assert admin.delete_group_offsets(og, [TopicPartition(topic, 0)])[
            TopicPartition(topic, 0)].__name__ == "NoError"
        assert admin.delete_groups([kg, ag, og]) == {kg: "OK", ag: "OK",
                                                     og: "GroupIdNotFoundError"}
        left = {g["group_id"] for g in admin.list_groups()}
        assert not {kg, ag, og} & left
    finally:
        admin.close()


def test_confluent_admin_list_and_describe(broker: BrokerProcess, topic: str) -> None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    kg, og = f"ckg-{uuid.uuid4().hex[:6]}", f"cog-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    offsets_only(broker, og, topic)
    with kafka_member(broker, kg, topic):
        listed = admin.list_consumer_groups(request_timeout=10).result()
        assert not listed.errors
        ours = {g.group_id: (g.state, g.is_simple_consumer_group) for g in listed.valid
                if g.group_id in (kg, og)}
        assert ours == {kg: (ConsumerGroupState.STABLE, False),
                        og: (ConsumerGroupState.EMPTY, True)}
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result()
        assert kg in {g.group_id for g in stable.valid}
        assert og not in {g.group_id for g in stable.valid}

        d = admin.describe_consumer_groups([kg])[kg].result()
        assert (d.state, d.partition_assignor) == (ConsumerGroupState.STABLE, "range")
        [m] = d.members
        assert (m.client_id, m.host) == ("kp-member", "/127.0.0.1")
        assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1]
    deleted = admin.delete_consumer_groups([og], request_timeout=10)
    deleted[og].result()  # raises if refused
    assert og not in {g.group_id for g in admin.list_consumer_groups().result().valid}


def test_amqp_consumer_may_not_join_a_kafka_held_group(broker: BrokerProcess,
                                                       topic: str) -> None:
    group = f"held-{uuid.uuid4().hex[:6]}"
    with kafka_member(broker, group, topic):
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=10)
            with pytest.raises(ChannelClosedByBroker) as refused:
                ch.basic_consume(topic, lambda *a: None,
                                 arguments={"x-consumer-group": group})
            assert refused.value.reply_code == 405
            assert refused.value.reply_text == (
                f"RESOURCE_LOCKED - consumer group '{group}' on stream '{topic}' in vhost '/' "
                f"has 1 Kafka member(s): a group's members come from one protocol at a time")
        finally:
            conn.close()
    # once the Kafka member left, AMQP consumers may use the group (and its offsets)
    with amqp_member(broker, group, topic):
        pass


def test_kafka_member_may_not_join_an_amqp_held_group(broker: BrokerProcess, topic: str) -> None:
    from kafka import KafkaConsumer
    from kafka.errors import InconsistentGroupProtocolError

    group = f"amqp-held-{uuid.uuid4().hex[:6]}"
    with amqp_member(broker, group, topic):
        consumer = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id=group,
                                 fetch_max_wait_ms=100)
        try:
            consumer.subscribe([topic])
            with pytest.raises(InconsistentGroupProtocolError):
                wait_for(lambda: consumer.poll(timeout_ms=100), lambda: False, "the refusal")
        finally:
            consumer.close()


def test_aiokafka_admin_lists_and_describes(broker: BrokerProcess, topic: str) -> None:
    """aiokafka asks old versions (ListGroups v2, DescribeGroups v3). It decodes a
    DescribeGroups v3 answer with the v2 layout (aiokafka's DescribeGroupsRequest_v3
    .RESPONSE_TYPE), leaving each group's authorized_operations unread: one group per
    call is all it can read, from Kafka too."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    ag, og = f"aag-{uuid.uuid4().hex[:6]}", f"aog-{uuid.uuid4().hex[:6]}"
    offsets_only(broker, og, topic)

    async def run() -> tuple[Any, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
        await admin.start()
        try:
            described = [await admin.describe_consumer_groups([g]) for g in (ag, og)]
            return await admin.list_consumer_groups(), described
        finally:
            await admin.close()

    with amqp_member(broker, ag, topic):
        listed, described = asyncio.run(run())
    assert {(ag, "consumer"), (og, "")} <= set(listed)
    states = {g[1]: (g[2], g[3], len(g[5])) for [resp] in described for g in resp.groups}
    assert states == {ag: ("Stable", "consumer", 1), og: ("Empty", "", 0)}
