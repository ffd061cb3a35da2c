"""Regressions of issue 12 (section 2): refusals the API and AMQP must make.

* HTTP publish with a ``user_id`` other than the caller's: 400 with RabbitMQ's text.
* Indirect routes: a new queue with ``x-dead-letter-exchange`` (exchange with
  ``alternate-exchange``) needs write on that exchange: AMQP 403, API 401.
* Invalid permission regexes: 400 ``invalid_regexp``, nothing stored.

These run against RabbitMQ 3.10.8 too (SMARTBROKER_TEST_URL / SMARTBROKER_TEST_API, see
tests/conftest.py) except those marked ``extension``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pika
import pytest

PASSWORD = "refusal-pw"


@dataclass
class Limited:
    """A management user in its own vhost with configure ``^c``, write ``^(w|c)``, read
    ``^(r|c)``, and exchanges ``wx`` (writable) and ``rx`` (not)."""

    name: str
    vhost: str
    api: httpx.Client
    amqp_url: str

    @property
    def v(self) -> str:
        return quote(self.vhost, safe="")


@pytest.fixture
def limited(api: httpx.Client, api_base: str, broker, uid: str) -> Iterator[Limited]:
    name, vhost = f"lim-{uid}", f"lim-{uid}"
    v = quote(vhost, safe="")
    assert api.put(f"/api/vhosts/{v}").status_code == 201
    assert api.put(f"/api/users/{name}",
                   json={"password": PASSWORD, "tags": "management"}).status_code == 201
    assert api.put(f"/api/permissions/{v}/{name}", json={
        "configure": "^c", "write": "^(w|c)", "read": "^(r|c)"}).status_code == 201
    for ex in ("wx", "rx"):
        assert api.put(f"/api/exchanges/{v}/{ex}", json={"type": "direct"}).status_code == 201
    host, port = broker.host, broker.port
    url = f"amqp://{name}:{PASSWORD}@{host}:{port}/{quote(vhost, safe='')}"
    client = httpx.Client(base_url=api_base, auth=(name, PASSWORD), timeout=10,
                          limits=httpx.Limits(max_keepalive_connections=0))
    try:
        yield Limited(name, vhost, client, url)
    finally:
        client.close()
        api.delete(f"/api/vhosts/{v}")
        api.delete(f"/api/users/{name}")


def amqp_refusal(url: str, declare) -> tuple[int, str] | None:
    """Run ``declare(channel)``; the channel error (code, text), or None if it succeeded."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declare(conn.channel())
        return None
    except pika.exceptions.ChannelClosedByBroker as err:
        return err.reply_code, err.reply_text
    finally:
        if conn.is_open:
            conn.close()


# -- user_id ---------------------------------------------------------------------------------
def test_http_publish_user_id_must_be_the_callers(api: httpx.Client, exchange: str,
                                                  api_auth: tuple[str, str]) -> None:
    body = {"routing_key": "k", "payload": "x", "payload_encoding": "string"}
    resp = api.post(f"/api/exchanges/%2F/{exchange}/publish",
                    json={**body, "properties": {"user_id": "somebody-else"}})
    assert resp.status_code == 400
    assert resp.json() == {"error": "bad_request", "reason": (
        f"406 PRECONDITION_FAILED - user_id property set to 'somebody-else' but "
        f"authenticated user was '{api_auth[0]}'")}
    own = api.post(f"/api/exchanges/%2F/{exchange}/publish",
                   json={**body, "properties": {"user_id": api_auth[0]}})
    assert own.status_code == 200, own.text


# -- dead-letter and alternate exchanges -----------------------------------------------------
def test_amqp_dead_letter_exchange_needs_write(limited: Limited) -> None:
    refused = (f"ACCESS_REFUSED - access to exchange 'rx' in vhost '{limited.vhost}' "
               f"refused for user '{limited.name}'")
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.queue_declare(
        "c-dlx-r", arguments={"x-dead-letter-exchange": "rx"})) == (403, refused)
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.queue_declare(
        "c-dlx-d", arguments={"x-dead-letter-exchange": ""})) == (
        403, f"ACCESS_REFUSED - access to exchange 'amq.default' in vhost '{limited.vhost}' "
             f"refused for user '{limited.name}'")
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.queue_declare(
        "c-dlx-w", arguments={"x-dead-letter-exchange": "wx"})) is None


def test_amqp_alternate_exchange_needs_write(limited: Limited) -> None:
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.exchange_declare(
        "c-ae-r", arguments={"alternate-exchange": "rx"})) == (
        403, f"ACCESS_REFUSED - access to exchange 'rx' in vhost '{limited.vhost}' "
             f"refused for user '{limited.name}'")
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.exchange_declare(
        "c-ae-w", arguments={"alternate-exchange": "wx"})) is None


def test_amqp_redeclare_is_compared_not_rechecked(limited: Limited) -> None:
    """An existing queue makes no new route: its redeclare is only compared (406)."""
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.queue_declare(
        "c-dlx-x", arguments={"x-dead-letter-exchange": "wx"})) is None
    code, text = amqp_refusal(limited.amqp_url, lambda ch: ch.queue_declare(
        "c-dlx-x", arguments={"x-dead-letter-exchange": "rx"}))
    assert code == 406 and "inequivalent arg 'x-dead-letter-exchange'" in text


def test_api_indirect_routes_need_write(limited: Limited) -> None:
    client, v = limited.api, limited.v
    refused = {"error": "not_authorised", "reason": "Access refused."}
    resp = client.put(f"/api/queues/{v}/c-q1", json={"arguments": {"x-dead-letter-exchange": "rx"}})
    assert (resp.status_code, resp.json()) == (401, refused)
    resp = client.put(f"/api/exchanges/{v}/c-x1",
                      json={"type": "direct", "arguments": {"alternate-exchange": "rx"}})
    assert (resp.status_code, resp.json()) == (401, refused)
    assert client.put(f"/api/queues/{v}/c-q2",
                      json={"arguments": {"x-dead-letter-exchange": "wx"}}).status_code == 201
    assert client.put(f"/api/exchanges/{v}/c-x2", json={
        "type": "direct", "arguments": {"alternate-exchange": "wx"}}).status_code == 201


# -- invalid regexes -------------------------------------------------------------------------
def test_invalid_permission_regex_is_refused_and_not_stored(api: httpx.Client,
                                                            limited: Limited) -> None:
    path = f"/api/permissions/{limited.v}/{limited.name}"
    resp = api.put(path, json={"configure": "(", "write": ".*", "read": ".*"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "bad_request"
    assert resp.json()["reason"][0] == "invalid_regexp"
    assert api.get(path).json()["configure"] == "^c"  # the old entry stands
    topic = f"/api/topic-permissions/{limited.v}/{limited.name}"
    resp = api.put(topic, json={"exchange": "amq.topic", "write": "[", "read": ".*"})
    assert resp.status_code == 400 and resp.json()["reason"][0] == "invalid_regexp"
    assert api.get(topic).status_code == 404
    # the user still publishes (an invalid stored pattern used to fail every publish: 541)
    assert amqp_refusal(limited.amqp_url, lambda ch: ch.basic_publish("wx", "k", b"x")) is None


@pytest.mark.extension
def test_invalid_regex_in_definitions_applies_nothing(api: httpx.Client, uid: str) -> None:
    doc = {"vhosts": [{"name": f"defs-{uid}"}],
           "permissions": [{"user": "guest", "vhost": f"defs-{uid}", "configure": "(",
                            "write": ".*", "read": ".*"}]}
    resp = api.post("/api/definitions", json=doc)
    assert resp.status_code == 400 and resp.json()["reason"][0] == "invalid_regexp"
    assert api.get(f"/api/vhosts/defs-{uid}").status_code == 404


@pytest.mark.extension
def test_cli_set_permissions_invalid_regex(broker, uid: str) -> None:
    for args in (["set-permissions", f"u-{uid}", "(", ".*", ".*"],
                 ["set-topic-permissions", f"u-{uid}", "amq.topic", ".*", "["]):
        done = subprocess.run([sys.executable, "-m", "smartbroker", "users", *args,
                               "--api", broker.api], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "invalid regular expression" in lines[0], done.stderr
