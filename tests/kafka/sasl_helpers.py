"""Users through the management API and Kafka clients that log in with SASL, shared by the
Kafka security tests (SASL, TLS, connections)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from smartbroker.launcher import BrokerProcess

PASSWORD = "s3cret-pw"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def topic_name(prefix: str = "sasl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def api(proc: BrokerProcess, method: str, path: str, body: Any = None,
        verify: Any = True) -> httpx.Response:
    """A management API call as guest (http or https, as the broker serves it)."""
    scheme = "https" if proc._https else "http"
    resp = httpx.request(method, f"{scheme}://127.0.0.1:{proc.management_port}/api{path}",
                         json=body, auth=("guest", "guest"), timeout=10, verify=verify)
    resp.raise_for_status()
    return resp


def add_user(proc: BrokerProcess, name: str, password: str | None = PASSWORD,
             permissions: tuple[str, str, str] | None = (".*", ".*", ".*"),
             password_hash: str | None = None, **kw: Any) -> None:
    """A user with a password (or only a hash) and permissions on "/" (None: no access)."""
    body: dict[str, Any] = {"tags": ""}
    if password is not None:
        body["password"] = password
    if password_hash is not None:
        body["password_hash"] = password_hash
    api(proc, "PUT", f"/users/{quote(name, safe='')}", body, **kw)
    if permissions is not None:
        configure, write, read = permissions
        api(proc, "PUT", f"/permissions/%2F/{quote(name, safe='')}",
            {"configure": configure, "write": write, "read": read}, **kw)


def confluent_sasl(bootstrap: str, mechanism: str, user: str, password: str,
                   protocol: str = "SASL_PLAINTEXT", **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "security.protocol": protocol,
            "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password,
            **extra}


def confluent_produce(config: dict[str, Any], topic: str, values: list[bytes],
                      timeout: float = 15.0) -> tuple[list[Any], list[Any]]:
    """(delivery results: None or the KafkaError per record, client errors seen)."""
    from confluent_kafka import Producer

    errors: list[Any] = []
    delivered: list[Any] = []
    producer = Producer({**config, "error_cb": errors.append, "message.timeout.ms": int(timeout * 1000)})
    for value in values:
        producer.produce(topic, value, callback=lambda err, msg: delivered.append(err))
    producer.flush(timeout + 5)
    return delivered, errors


def confluent_refused(config: dict[str, Any], topic: str,
                      timeout: float = 15.0) -> tuple[list[Any], list[Any]]:
    """``confluent_produce`` of one record by a client whose login the broker refuses:
    back as soon as the client reports the authentication error, not after a message
    timeout; the record is then purged, so its delivery result is an error too."""
    from confluent_kafka import KafkaError, Producer

    errors: list[Any] = []
    delivered: list[Any] = []
    producer = Producer({**config, "error_cb": errors.append})
    producer.produce(topic, b"x", callback=lambda err, msg: delivered.append(err))
    deadline = time.monotonic() + timeout
    while (not any(e.code() == KafkaError._AUTHENTICATION for e in errors)
           and time.monotonic() < deadline):
        producer.poll(0.05)
    producer.purge()
    producer.flush(timeout)
    return delivered, errors


def confluent_consume(config: dict[str, Any], topic: str, count: int,
                      timeout: float = 20.0) -> list[bytes]:
    """The first ``count`` values of ``topic``, from the beginning, within ``timeout``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": topic_name("g"), "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    got: list[bytes] = []
    try:  # assigned, not subscribed: no group coordination in the way
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
