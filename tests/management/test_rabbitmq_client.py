"""A real RabbitMQ management client from PyPI (AMQPStorm's ManagementApi) against us."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

management = pytest.importorskip("amqpstorm.management")


@pytest.fixture
def client(api_base: str, api_auth: tuple[str, str]):
    return management.ManagementApi(api_base, *api_auth, timeout=10)


def test_amqpstorm_management_round_trip(client, broker, uid: str) -> None:
    assert client.aliveness_test("/")["status"] == "ok"
    assert client.whoami()["name"] == urlsplit(broker.api).username
    assert "rabbitmq_version" in client.overview()
    assert any(v["name"] == "/" for v in client.virtual_host.list())

    q, x = f"test.storm.q.{uid}", f"test.storm.x.{uid}"
    client.queue.declare(q, durable=False)
    client.exchange.declare(x, exchange_type="topic")
    try:
        client.queue.bind(queue=q, exchange=x, routing_key="a.*")
        assert any(b["source"] == x for b in client.queue.bindings(q))
        assert client.basic.publish("one", "a.b", exchange=x)["routed"] is True
        assert client.basic.publish("two", "zzz", exchange=x)["routed"] is False
        peek = client.basic.get(q, requeue=True, to_dict=True)
        assert peek[0]["payload"] == "one"
        deadline = time.monotonic() + 15
        while client.queue.get(q).get("messages") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # RabbitMQ's stats lag; smartbroker's do not
        assert client.queue.get(q)["messages"] == 1
        got = client.basic.get(q, requeue=False, to_dict=True)
        assert got[0]["payload"] == "one" and got[0]["redelivered"] is True
        client.queue.unbind(queue=q, exchange=x, routing_key="a.*")
        assert not any(b["source"] == x for b in client.queue.bindings(q))
        client.queue.purge(q)
        assert q in [item["name"] for item in client.queue.list()]
    finally:
        client.queue.delete(q)
        client.exchange.delete(x)
    with pytest.raises(management.ApiError) as info:
        client.queue.get(q)
    assert info.value.error_code == 404
