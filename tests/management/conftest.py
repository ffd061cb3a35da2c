"""Fixtures for management API tests: an httpx client on ``broker.api`` and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from smartbroker.launcher import wait_for_port


@pytest.fixture(scope="session")
def api_base(broker) -> str:
    if not broker.api:
        pytest.skip("no management API (set SMARTBROKER_TEST_API for an external broker)")
    parts = urlsplit(broker.api)
    wait_for_api(parts.hostname or "127.0.0.1", parts.port or 15672)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def wait_for_api(host: str, port: int, timeout: float = 20.0) -> None:
    """A smartbroker fixture broker already answers HTTP; an external one may still start."""
    wait_for_port(host, port, None, timeout)


@pytest.fixture(scope="session")
def api_auth(broker) -> tuple[str, str]:
    parts = urlsplit(broker.api or "http://guest:guest@x")
    return parts.username or "guest", parts.password or "guest"


@pytest.fixture
def api(api_base: str, api_auth: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_base, auth=api_auth, timeout=10) as client:
        yield client


@pytest.fixture
def queue(api: httpx.Client, qname: str) -> Iterator[str]:
    """A fresh non-durable queue declared through the API, deleted afterwards."""
    assert api.put(f"/api/queues/%2F/{qname}", json={"durable": False}).status_code == 201
    yield qname
    api.delete(f"/api/queues/%2F/{qname}")


@pytest.fixture
def exchange(api: httpx.Client, uid: str) -> Iterator[str]:
    name = f"test.mx.{uid}"
    assert api.put(f"/api/exchanges/%2F/{name}", json={"type": "direct"}).status_code == 201
    yield name
    api.delete(f"/api/exchanges/%2F/{name}")


def publish(api: httpx.Client, exchange: str, routing_key: str, payload: str, **props) -> bool:
    resp = api.post(f"/api/exchanges/%2F/{exchange or 'amq.default'}/publish",
                    json={"properties": props, "routing_key": routing_key, "payload": payload,
                          "payload_encoding": "string"})
    assert resp.status_code == 200, resp.text
    return resp.json()["routed"]


@pytest.fixture
def pub(api: httpx.Client):
    """``pub(exchange, routing_key, payload, **properties) -> routed`` over the API."""
    return lambda exchange, routing_key, payload, **props: publish(
        api, exchange, routing_key, payload, **props)


def wait_queue(api: httpx.Client, name: str, vhost: str = "%2F", timeout: float = 15.0,
               **expect) -> dict:
    """The queue's JSON once it shows ``expect``; RabbitMQ's stats are eventually consistent
    (emitted every few seconds), smartbroker's are immediate so this returns at once."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        doc = api.get(f"/api/queues/{vhost}/{name}").json()
        if all(doc.get(k) == v for k, v in expect.items()):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {name}: wanted {expect}, got "
                                 f"{ {k: doc.get(k) for k in expect} }")
        time.sleep(0.1)


@pytest.fixture
def queue_state(api: httpx.Client):
    """``queue_state(name, **expect)``: see ``wait_queue``."""
    return lambda name, **expect: wait_queue(api, name, **expect)
