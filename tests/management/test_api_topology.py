"""Exchanges and bindings: list, declare, delete, e2q and e2e bindings, properties_key."""

from __future__ import annotations

import httpx


def test_exchange_fields_and_default_exchange(api: httpx.Client) -> None:
    exchanges = {e["name"]: e for e in api.get("/api/exchanges/%2F").json()}
    assert "" in exchanges and "amq.topic" in exchanges
    doc = api.get("/api/exchanges/%2F/amq.topic").json()
    for key in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"):
        assert key in doc
    assert doc["type"] == "topic" and doc["durable"] is True
    assert api.get("/api/exchanges/%2F/amq.default").json()["name"] == ""


def test_exchange_put_delete(api: httpx.Client, uid: str) -> None:
    name = f"test.px.{uid}"
    assert api.put(f"/api/exchanges/%2F/{name}", json={"type": "fanout", "durable": True}).status_code == 201
    assert api.put(f"/api/exchanges/%2F/{name}", json={"type": "fanout", "durable": True}).status_code == 204
    resp = api.put(f"/api/exchanges/%2F/{name}", json={"type": "topic", "durable": True})
    assert resp.status_code == 400 and "inequivalent" in resp.json()["reason"]
    assert api.get(f"/api/exchanges/%2F/{name}").json()["type"] == "fanout"
    assert api.delete(f"/api/exchanges/%2F/{name}").status_code == 204
    assert api.get(f"/api/exchanges/%2F/{name}").status_code == 404
    assert api.delete(f"/api/exchanges/%2F/{name}").status_code == 404


def test_bad_exchange_type_is_400(api: httpx.Client, uid: str) -> None:
    resp = api.put(f"/api/exchanges/%2F/test.bad.{uid}", json={"type": "bogus"})
    assert resp.status_code == 400


def test_bind_route_unbind(api: httpx.Client, exchange: str, queue: str, pub) -> None:
    path = f"/api/bindings/%2F/e/{exchange}/q/{queue}"
    resp = api.post(path, json={"routing_key": "a/b c", "arguments": {}})
    assert resp.status_code == 201
    assert api.post(path, json={"routing_key": "", "arguments": {}}).status_code == 201
    listed = api.get(path).json()
    keys = {b["routing_key"]: b["properties_key"] for b in listed}
    assert keys[""] == "~"
    assert keys["a/b c"] == "a%2Fb+c"
    for b in listed:
        assert b["source"] == exchange and b["destination"] == queue
        assert b["destination_type"] == "queue" and b["vhost"] == "/"
    assert pub(exchange, "a/b c", "routed") is True
    assert api.delete(f"{path}/~").status_code == 204
    assert api.delete(f"{path}/{httpx.URL('a%252Fb%2Bc')}").status_code == 204
    assert api.get(path).json() == []
    assert pub(exchange, "a/b c", "dropped") is False
    assert api.delete(f"{path}/~").status_code == 404


def test_binding_with_arguments(api: httpx.Client, exchange: str, queue: str) -> None:
    path = f"/api/bindings/%2F/e/{exchange}/q/{queue}"
    api.post(path, json={"routing_key": "k", "arguments": {"x-foo": "bar"}})
    [binding] = api.get(path).json()
    assert binding["arguments"] == {"x-foo": "bar"}
    assert binding["properties_key"].startswith("k~")
    assert api.get(f"{path}/{binding['properties_key']}").json()["routing_key"] == "k"
    assert api.delete(f"{path}/{binding['properties_key']}").status_code == 204
    assert api.get(path).json() == []


def test_default_bindings_listed(api: httpx.Client, queue: str) -> None:
    listed = api.get("/api/bindings/%2F").json()
    assert {"source": "", "vhost": "/", "destination": queue, "destination_type": "queue",
            "routing_key": queue, "arguments": {}, "properties_key": queue} in listed
    assert any(b["destination"] == queue for b in api.get("/api/bindings").json())


def test_exchange_to_exchange_binding(api: httpx.Client, exchange: str, queue: str, uid: str,
                                      pub) -> None:
    src = f"test.e2e.{uid}"
    api.put(f"/api/exchanges/%2F/{src}", json={"type": "fanout"})
    try:
        assert api.post(f"/api/bindings/%2F/e/{src}/e/{exchange}", json={"routing_key": ""}).status_code == 201
        api.post(f"/api/bindings/%2F/e/{exchange}/q/{queue}", json={"routing_key": "rk"})
        assert pub(src, "rk", "through two exchanges") is True
        [b] = api.get(f"/api/bindings/%2F/e/{src}/e/{exchange}").json()
        assert b["destination_type"] == "exchange"
        assert api.delete(f"/api/bindings/%2F/e/{src}/e/{exchange}/~").status_code == 204
        assert pub(src, "rk", "nowhere") is False
    finally:
        api.delete(f"/api/exchanges/%2F/{src}")


def test_binding_to_missing_queue_is_404(api: httpx.Client, exchange: str, uid: str) -> None:
    resp = api.post(f"/api/bindings/%2F/e/{exchange}/q/missing.{uid}", json={"routing_key": "k"})
    assert resp.status_code == 404


def test_exchange_bindings_source_and_destination(api, uid: str) -> None:
    """RabbitMQ's /api/exchanges/{vhost}/{name}/bindings/source|destination."""
    src, dst, q = f"src-{uid}", f"dst-{uid}", f"q-{uid}"
    for name in (src, dst):
        assert api.put(f"/api/exchanges/%2F/{name}", json={"type": "direct"}).status_code == 201
    assert api.put(f"/api/queues/%2F/{q}", json={"durable": False}).status_code == 201
    try:
        assert api.post(f"/api/bindings/%2F/e/{src}/e/{dst}", json={"routing_key": "k1"}).status_code == 201
        assert api.post(f"/api/bindings/%2F/e/{src}/q/{q}", json={"routing_key": "k2"}).status_code == 201
        out = api.get(f"/api/exchanges/%2F/{src}/bindings/source").json()
        assert sorted((b["destination"], b["routing_key"]) for b in out) == [(dst, "k1"), (q, "k2")]
        into = api.get(f"/api/exchanges/%2F/{dst}/bindings/destination").json()
        assert [(b["source"], b["routing_key"]) for b in into] == [(src, "k1")]
        assert api.get(f"/api/exchanges/%2F/{dst}/bindings/source").json() == []
        missing = api.get(f"/api/exchanges/%2F/nope-{uid}/bindings/source")
        assert (missing.status_code, missing.json()) == (200, [])  # RabbitMQ: empty, not 404
    finally:
        api.delete(f"/api/queues/%2F/{q}")
        for name in (src, dst):
            api.delete(f"/api/exchanges/%2F/{name}")
