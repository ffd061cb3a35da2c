"""SASL PLAIN and SCRAM-SHA-256/512 against the broker's users, with confluent-kafka, aiokafka,
kafka-python and kcat: the right password produces and consumes, a wrong one is the
client's authentication error; the user's permissions then decide (a user without write
gets TOPIC_AUTHORIZATION_FAILED); a user whose password was only given hashed has no SCRAM
credentials; a user without access to the Kafka vhost is refused at login."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.auth import hash_password
from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.sasl_helpers import (
    MECHANISMS,
    PASSWORD,
    add_user,
    confluent_consume,
    confluent_produce,
    confluent_refused,
    confluent_sasl,
    topic_name,
)

pytestmark = pytest.mark.extension


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[BrokerProcess]:
    """A broker with users: alice (all), reader (read only), writer (no read), hashed
    (password given only as a hash), stranger (no permissions in "/")."""
    with own_kafka("smartbroker-kafka-sasl-") as proc:
        add_user(proc, "alice")
        add_user(proc, "reader", permissions=(".*", "^$", ".*"))
        add_user(proc, "hashed", password=None, password_hash=hash_password(PASSWORD))
        add_user(proc, "stranger", permissions=None)
        add_user(proc, "writer", permissions=(".*", ".*", "^$"))  # may read nothing
        yield proc


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_produces_and_consumes_as_a_sasl_user(sasl_broker: BrokerProcess,
                                                        mechanism: str) -> None:
    topic = topic_name()
    config = confluent_sasl(sasl_broker.kafka_bootstrap, mechanism, "alice", PASSWORD)
    delivered, errors = confluent_produce(config, topic, [b"one", b"two"])
    assert delivered == [None, None], errors
    assert confluent_consume(config, topic, 2) == [b"one", b"two"]
    assert f"authenticated as 'alice' (SASL {mechanism})" in sasl_broker.log()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_wrong_password_is_an_authentication_error(sasl_broker: BrokerProcess,
                                                             mechanism: str) -> None:
    from confluent_kafka import KafkaError

    config = confluent_sasl(sasl_broker.kafka_bootstrap, mechanism, "alice", "wrong")
    delivered, errors = confluent_refused(config, topic_name())
    assert delivered and delivered[0] is not None  # never delivered
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, errors
    assert "Authentication failed" in auth[0].str()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_sasl(sasl_broker: BrokerProcess, mechanism: str,
                           caplog: pytest.LogCaptureFixture) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    topic = topic_name()
    common = {"bootstrap_servers": sasl_broker.kafka_bootstrap,
              "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
              "sasl_plain_username": "alice"}
    producer = KafkaProducer(sasl_plain_password=PASSWORD, enable_idempotence=False, **common)
    try:
        meta = producer.send(topic, b"hello").get(timeout=15)
    finally:
        producer.close()
    consumer = KafkaConsumer(sasl_plain_password=PASSWORD, enable_auto_commit=False, **common)
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = consumer.poll(timeout_ms=10000, max_records=1)
        assert [r.value for r in records.get(tp, [])] == [b"hello"]
    finally:
        consumer.close()
    # a wrong password: kafka-python 3 retries the bootstrap, then gives up
    with caplog.at_level("WARNING", "kafka"), pytest.raises(KafkaError):
        KafkaProducer(sasl_plain_password="wrong", enable_idempotence=False,
                      bootstrap_timeout_ms=2000, **common).close()
    assert "SaslAuthenticationFailedError" in caplog.text
    assert "Authentication failed" in caplog.text


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_kafka_python_as_a_0_11_client_sends_raw_tokens(sasl_broker: BrokerProcess,
                                                        mechanism: str) -> None:
    """Told it talks to Kafka 0.11, kafka-python uses SaslHandshake v0 and then raw SASL
    tokens without SaslAuthenticate framing, as Kafka still accepts."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=sasl_broker.kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism, sasl_plain_username="alice", sasl_plain_password=PASSWORD,
        api_version=(0, 11, 0), enable_idempotence=False)
    try:
        assert producer.send(topic_name("v0"), b"raw").get(timeout=15).offset == 0
    finally:
        producer.close()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kcat_sasl(sasl_broker: BrokerProcess, mechanism: str) -> None:
    topic = topic_name("kcat")
    sasl = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanisms={mechanism}",
            "-X", "sasl.username=alice"]
    base = ["kcat", "-b", sasl_broker.kafka_bootstrap, *sasl]
    subprocess.run([*base, "-X", f"sasl.password={PASSWORD}", "-P", "-t", topic],
                   input=b"a\nb\n", check=True, timeout=30, capture_output=True)
    out = subprocess.run([*base, "-X", f"sasl.password={PASSWORD}", "-C", "-t", topic,
                          "-o", "beginning", "-c", "2", "-e"],
                         check=True, timeout=30, capture_output=True)
    assert out.stdout.split() == [b"a", b"b"]
    wrong = subprocess.run([*base, "-X", "sasl.password=wrong", "-L", "-m", "5"],
                           timeout=30, capture_output=True)
    assert wrong.returncode != 0
    assert b"Authentication failed" in wrong.stderr


def test_a_user_without_write_gets_topic_authorization_failed(sasl_broker: BrokerProcess) -> None:
    from confluent_kafka import KafkaError

    topic = topic_name()
    alice = confluent_sasl(sasl_broker.kafka_bootstrap, "SCRAM-SHA-256", "alice", PASSWORD)
    assert confluent_produce(alice, topic, [b"by alice"])[0] == [None]
    reader = confluent_sasl(sasl_broker.kafka_bootstrap, "SCRAM-SHA-256", "reader", PASSWORD)
    delivered, _ = confluent_produce(reader, topic, [b"by reader"], timeout=5)
    assert delivered[0] is not None
    assert delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert confluent_consume(reader, topic, 1) == [b"by alice"]  # read it may


def test_a_user_imported_with_a_hash_has_plain_but_no_scram(sasl_broker: BrokerProcess) -> None:
    from confluent_kafka import KafkaError

    topic = topic_name()
    plain = confluent_sasl(sasl_broker.kafka_bootstrap, "PLAIN", "hashed", PASSWORD)
    assert confluent_produce(plain, topic, [b"x"])[0] == [None]
    scram = confluent_sasl(sasl_broker.kafka_bootstrap, "SCRAM-SHA-512", "hashed", PASSWORD)
    _, errors = confluent_refused(scram, topic)
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth and "has no SCRAM-SHA-512 credentials" in auth[0].str()


def test_a_user_without_access_to_the_kafka_vhost_is_refused(sasl_broker: BrokerProcess) -> None:
    from confluent_kafka import KafkaError

    config = confluent_sasl(sasl_broker.kafka_bootstrap, "PLAIN", "stranger", PASSWORD)
    _, errors = confluent_refused(config, topic_name())
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth and "has no access to vhost '/'" in auth[0].str()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_aiokafka_sasl(sasl_broker: BrokerProcess, mechanism: str) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    async def produce(password: str) -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=sasl_broker.kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism, sasl_plain_username="alice", sasl_plain_password=password,
            request_timeout_ms=5000)
        try:
            await producer.start()
            return (await producer.send_and_wait(topic_name("aio"), b"v")).offset
        finally:
            await producer.stop()

    assert asyncio.run(produce(PASSWORD)) == 0
    with pytest.raises(KafkaConnectionError):
        asyncio.run(produce("wrong"))


def test_a_user_who_may_read_nothing_gets_group_authorization_failed(
        sasl_broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer, KafkaError

    topic = topic_name()
    writer = confluent_sasl(sasl_broker.kafka_bootstrap, "PLAIN", "writer", PASSWORD)
    assert confluent_produce(writer, topic, [b"x"])[0] == [None]  # write it may
    errors: list[Any] = []
    consumer = Consumer({**writer, "group.id": topic_name("g"), "error_cb": errors.append})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is not None:
                errors.append(msg.error())
            if any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors):
                break
    finally:
        consumer.close()
    assert any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors), errors
