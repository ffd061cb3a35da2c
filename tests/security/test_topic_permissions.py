"""Topic permissions (RabbitMQ's topic authorisation), set through the management API:
routing keys a user may publish with and bind with, per topic exchange."""

from __future__ import annotations

import contextlib

import httpx
import pika
import pytest

from tests.integration.helpers import channel_error, connect
from tests.security.test_permissions import _grant, _url, api, user  # noqa: F401  (fixtures)


def _topic(api: httpx.Client, user: str, exchange: str, write: str, read: str) -> None:  # noqa: F811
    response = api.put(f"/api/topic-permissions/%2F/{user}",
                       json={"exchange": exchange, "write": write, "read": read})
    assert response.status_code == 201, response.text


@pytest.fixture
def topic_exchange(broker_url: str, uid: str):
    name = f"tx-{uid}"
    with connect(broker_url) as admin:
        admin.channel().exchange_declare(name, "topic")
        yield name
        admin.channel().exchange_delete(name)


def test_publish_routing_key_must_match_the_write_pattern(api: httpx.Client, broker_url: str,  # noqa: F811
                                                          user: str, topic_exchange: str) -> None:  # noqa: F811
    _grant(api, user, ".*", ".*", ".*")
    _topic(api, user, topic_exchange, write="^{username}\\.", read=".*")
    conn = connect(_url(broker_url, user))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(topic_exchange, f"{user}.orders", b"ok")  # {username} expanded
        ch.basic_publish("amq.topic", "anything", b"ok")  # no topic permission there
        with channel_error(403) as err:
            c = conn.channel()
            c.confirm_delivery()
            c.basic_publish(topic_exchange, "someone.else", b"no")
        assert err[0].reply_text == (
            f"ACCESS_REFUSED - access to topic 'someone.else' in exchange "
            f"'{topic_exchange}' in vhost '/' refused for user '{user}'")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_bind_routing_key_must_match_the_read_pattern(api: httpx.Client, broker_url: str,  # noqa: F811
                                                      user: str, topic_exchange: str,  # noqa: F811
                                                      uid: str) -> None:
    _grant(api, user, ".*", ".*", ".*")
    _topic(api, user, topic_exchange, write=".*", read="^public\\.")
    conn = connect(_url(broker_url, user))
    try:
        ch = conn.channel()
        q = ch.queue_declare(f"tq-{uid}", exclusive=True).method.queue
        ch.queue_bind(q, topic_exchange, "public.#")
        with channel_error(403) as err:
            conn.channel().queue_bind(q, topic_exchange, "private.#")
        assert "access to topic 'private.#' in exchange" in err[0].reply_text
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_topic_permissions_are_listed_and_deleted(api: httpx.Client, user: str,  # noqa: F811
                                                  topic_exchange: str) -> None:
    _topic(api, user, topic_exchange, write="^a", read="^b")
    listed = api.get(f"/api/topic-permissions/%2F/{user}").json()
    assert [(p["exchange"], p["write"], p["read"]) for p in listed] == [(topic_exchange, "^a", "^b")]
    assert any(p["user"] == user for p in api.get("/api/topic-permissions").json())
    assert api.delete(f"/api/topic-permissions/%2F/{user}").status_code == 204
    assert api.get(f"/api/topic-permissions/%2F/{user}").status_code == 404


def test_direct_exchanges_ignore_topic_permissions(api: httpx.Client, broker_url: str,  # noqa: F811
                                                   user: str) -> None:  # noqa: F811
    _grant(api, user, ".*", ".*", ".*")
    _topic(api, user, "amq.direct", write="^nothing$", read="^nothing$")
    with connect(_url(broker_url, user)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.direct", "whatever", b"ok")
        assert isinstance(ch, pika.adapters.blocking_connection.BlockingChannel)
