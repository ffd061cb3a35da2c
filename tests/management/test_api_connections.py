"""Connections, channels, consumers; closing a connection through the API."""

from __future__ import annotations

import time

import httpx
import pika
import pytest


def _wait(fn, timeout: float = 15.0):
    """Poll ``fn`` until it returns something truthy (stats lag on RabbitMQ)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def amqp(broker_url: str, uid: str):
    params = pika.URLParameters(broker_url)
    params.client_properties = {"connection_name": f"mgmt-test-{uid}", "product": "mgmt-test"}
    conn = pika.BlockingConnection(params)
    yield conn
    if conn.is_open:
        conn.close()


def _mine(api: httpx.Client, uid: str) -> dict | None:
    for c in api.get("/api/connections").json():
        if (c.get("client_properties") or {}).get("connection_name") == f"mgmt-test-{uid}":
            return c
    return None


def test_connection_channel_consumer_listed(api: httpx.Client, amqp, queue: str, uid: str) -> None:
    ch = amqp.channel()
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(queue, lambda *a: None, consumer_tag=f"ctag-{uid}")
    conn = _wait(lambda: (c := _mine(api, uid)) and c["channels"] == 1 and c)
    assert conn is not None
    for key in ("name", "vhost", "user", "peer_host", "peer_port", "channels",
                "client_properties", "connected_at", "recv_oct", "send_oct", "protocol"):
        assert key in conn, key
    assert conn["vhost"] == "/" and conn["channels"] == 1
    one = api.get("/api/connections/" + _q(conn["name"])).json()
    assert one["name"] == conn["name"]
    channels = _wait(lambda: [c for c in api.get("/api/channels").json()
                              if c["connection_details"]["name"] == conn["name"]])
    assert channels and channels[0]["number"] == 1
    consumers = _wait(lambda: [c for c in api.get("/api/consumers/%2F").json()
                               if c["consumer_tag"] == tag])
    assert consumers[0]["queue"] == {"name": queue, "vhost": "/"}
    assert consumers[0]["ack_required"] is True
    assert consumers[0]["prefetch_count"] == 7
    assert _wait(lambda: api.get(f"/api/queues/%2F/{queue}").json().get("consumers") == 1)


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def test_close_connection(api: httpx.Client, amqp, uid: str) -> None:
    conn = _wait(lambda: _mine(api, uid))
    assert api.delete("/api/connections/" + _q(conn["name"]),
                      headers={"X-Reason": "test says bye"}).status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosed) as info:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            amqp.process_data_events(0.05)
    assert info.value.reply_code == 320
    assert "test says bye" in info.value.reply_text
    assert _wait(lambda: _mine(api, uid) is None)


def test_missing_connection_is_404(api: httpx.Client) -> None:
    assert api.delete("/api/connections/no%20such").status_code == 404
    assert api.get("/api/connections/no%20such").status_code == 404
