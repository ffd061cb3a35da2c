"""Vhost and user limits (RabbitMQ's names and replies), set through the management API
(`/api/vhost-limits`, `/api/user-limits`) or the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pika
import pika.exceptions
import pytest

from tests.integration.helpers import channel_error, connect


@pytest.fixture
def api(broker) -> Iterator[httpx.Client]:
    if not broker.api:
        pytest.skip("needs the management API (SMARTBROKER_TEST_API for an external broker)")
    parts = urlsplit(broker.api)
    with httpx.Client(base_url=f"{parts.scheme}://{parts.hostname}:{parts.port}",
                      auth=(parts.username or "guest", parts.password or "guest"), timeout=10) as c:
        yield c


@pytest.fixture
def vhost(api: httpx.Client, uid: str) -> Iterator[str]:
    name = f"limited-{uid}"
    assert api.put(f"/api/vhosts/{name}").status_code == 201
    # 204: as RabbitMQ, creating the vhost already gave its creator (guest) permissions
    assert api.put(f"/api/permissions/{name}/guest",
                   json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 204
    yield name
    api.delete(f"/api/vhosts/{name}")


def _url(broker_url: str, vhost: str, user: str = "guest", password: str = "guest") -> str:
    parts = urlsplit(broker_url)
    return f"amqp://{user}:{password}@{parts.hostname}:{parts.port}/{quote(vhost, safe='')}"


def test_vhost_connection_limit(api: httpx.Client, broker_url: str, vhost: str) -> None:
    assert api.put(f"/api/vhost-limits/{vhost}/max-connections", json={"value": 1}).status_code == 204
    first = connect(_url(broker_url, vhost))
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
            connect(_url(broker_url, vhost))
        assert "530" in str(info.value)
    finally:
        first.close()
    connect(_url(broker_url, vhost)).close()  # room again once the first one left
    limits = api.get(f"/api/vhost-limits/{vhost}").json()
    assert limits == [{"vhost": vhost, "value": {"max-connections": 1}}]


def test_vhost_queue_limit(api: httpx.Client, broker_url: str, vhost: str) -> None:
    assert api.put(f"/api/vhost-limits/{vhost}/max-queues", json={"value": 2}).status_code == 204
    conn = connect(_url(broker_url, vhost))
    try:
        ch = conn.channel()
        ch.queue_declare("q1")
        ch.queue_declare("q2")
        ch.queue_declare("q1")  # redeclaring an existing queue is fine
        with channel_error(406) as err:
            conn.channel().queue_declare("q3")
        assert "queue limit" in err[0].reply_text
        assert api.delete(f"/api/vhost-limits/{vhost}/max-queues").status_code == 204
        conn.channel().queue_declare("q3")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_user_channel_limit(api: httpx.Client, broker_url: str, uid: str) -> None:
    user = f"chan-{uid}"
    api.put(f"/api/users/{user}", json={"password": "pw", "tags": ""})
    api.put(f"/api/permissions/%2F/{user}", json={"configure": ".*", "write": ".*", "read": ".*"})
    try:
        assert api.put(f"/api/user-limits/{user}/max-channels", json={"value": 2}).status_code == 204
        conn = connect(_url(broker_url, "/", user, "pw"))
        conn.channel()
        conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            conn.channel()
        assert info.value.reply_code == 530
    finally:
        api.delete(f"/api/users/{user}")


def test_bad_limit_is_400(api: httpx.Client, vhost: str) -> None:
    assert api.put(f"/api/vhost-limits/{vhost}/max-bananas", json={"value": 1}).status_code == 400
    assert api.put(f"/api/vhost-limits/{vhost}/max-queues", json={"value": "ten"}).status_code == 400
