"""Users, vhosts and permissions as RabbitMQ applies them over AMQP (set through the
management HTTP API, which both brokers share)."""

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
def user(api: httpx.Client, uid: str) -> Iterator[str]:
    name = f"user-{uid}"
    assert api.put(f"/api/users/{name}", json={"password": "s3cret", "tags": ""}).status_code == 201
    yield name
    api.delete(f"/api/users/{name}")


def _url(broker_url: str, user: str, password: str = "s3cret", vhost: str = "/") -> str:
    parts = urlsplit(broker_url)
    return f"amqp://{user}:{password}@{parts.hostname}:{parts.port}/{quote(vhost, safe='')}"


def _grant(api: httpx.Client, user: str, configure: str, write: str, read: str,
           vhost: str = "/", expect: int = 201) -> None:
    """Set permissions; ``expect`` 201 when new, 204 when they replace earlier ones."""
    response = api.put(f"/api/permissions/{quote(vhost, safe='')}/{user}",
                       json={"configure": configure, "write": write, "read": read})
    assert response.status_code == expect, response.text


def test_user_without_permissions_cannot_open_the_vhost(broker_url: str, user: str) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        connect(_url(broker_url, user))
    assert "(530)" in str(info.value) and "access to vhost '/' refused" in str(info.value)


def test_wrong_password_is_403(broker_url: str, user: str) -> None:
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)):
        connect(_url(broker_url, user, password="nope"))


def test_configure_write_read_are_applied_per_resource(api: httpx.Client, broker_url: str,
                                                       user: str, uid: str) -> None:
    mine, other = f"mine-{uid}", f"other-{uid}"
    _grant(api, user, configure=f"^mine-{uid}$", write=f"^(mine-{uid}|amq\\.default)$",
           read=f"^mine-{uid}$")
    conn = connect(_url(broker_url, user))
    try:
        ch = conn.channel()
        ch.queue_declare(mine, auto_delete=False)
        ch.basic_publish("", mine, b"hello")  # write on amq.default
        assert ch.basic_get(mine, auto_ack=True)[2] == b"hello"  # read on the queue
        with channel_error(403) as err:
            conn.channel().queue_declare(other)
        assert "access to queue" in err[0].reply_text and user in err[0].reply_text
        with channel_error(403):
            conn.channel().exchange_declare(other, "fanout")
        with channel_error(403) as err:
            conn.channel().queue_bind(mine, "amq.fanout")  # needs read on the exchange
        assert "access to exchange 'amq.fanout'" in err[0].reply_text
        with channel_error(403):
            c = conn.channel()
            c.confirm_delivery()
            c.basic_publish("amq.fanout", "", b"x")  # needs write on the exchange
        ch = conn.channel()
        ch.queue_delete(mine)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_permissions_changes_apply_to_new_operations(api: httpx.Client, broker_url: str,
                                                      user: str, uid: str) -> None:
    q = f"q-{uid}"
    _grant(api, user, configure=".*", write=".*", read=".*")
    conn = connect(_url(broker_url, user))
    try:
        ch = conn.channel()
        ch.queue_declare(q, exclusive=True)
        _grant(api, user, configure="", write=".*", read=".*", expect=204)  # "" denies all
        with channel_error(403):
            conn.channel().queue_declare(f"{q}.2")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_vhost_isolation(api: httpx.Client, broker_url: str, user: str, uid: str) -> None:
    vhost = f"vh-{uid}"
    assert api.put(f"/api/vhosts/{vhost}").status_code == 201
    try:
        _grant(api, user, ".*", ".*", ".*", vhost=vhost)
        conn = connect(_url(broker_url, user, vhost=vhost))
        ch = conn.channel()
        ch.queue_declare("shared-name")
        ch.basic_publish("", "shared-name", b"in the vhost")
        conn.close()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(_url(broker_url, user))  # no permission on "/"
        guest = connect(broker_url)
        with channel_error(404):
            guest.channel().queue_declare("shared-name", passive=True)
        guest.close()
    finally:
        api.delete(f"/api/vhosts/{vhost}")
