"""Definitions export/import in RabbitMQ's JSON format."""

from __future__ import annotations

import httpx


def test_export_shape(api: httpx.Client, queue: str, exchange: str) -> None:
    api.post(f"/api/bindings/%2F/e/{exchange}/q/{queue}", json={"routing_key": "rk"})
    doc = api.get("/api/definitions").json()
    for key in ("rabbit_version", "users", "vhosts", "permissions", "exchanges", "queues",
                "bindings", "policies"):
        assert key in doc, key
    assert {"name": queue, "vhost": "/", "durable": False, "auto_delete": False,
            "arguments": {}} in doc["queues"]
    assert any(e["name"] == exchange and e["type"] == "direct" for e in doc["exchanges"])
    assert not any(e["name"].startswith("amq.") or e["name"] == "" for e in doc["exchanges"])
    assert {"source": exchange, "vhost": "/", "destination": queue, "destination_type": "queue",
            "routing_key": "rk", "arguments": {}} in doc["bindings"]
    assert any(u["name"] == "guest" and u["password_hash"] for u in doc["users"])


def test_import_creates_everything(api: httpx.Client, api_base: str, uid: str) -> None:
    vh, user, q, x = f"test-defs-{uid}", f"defs-user-{uid}", f"defs.q.{uid}", f"defs.x.{uid}"
    doc = {
        "vhosts": [{"name": vh}],
        "users": [{"name": user, "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]}],
        "permissions": [{"user": user, "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": x, "vhost": vh, "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": q, "vhost": vh, "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 5}}],
        "bindings": [{"source": x, "vhost": vh, "destination": q, "destination_type": "queue",
                      "routing_key": "", "arguments": {}}],
        "policies": [],
    }
    try:
        assert api.post("/api/definitions", json=doc).status_code == 204  # as RabbitMQ: no body
        assert api.post("/api/definitions", json=doc).status_code == 204  # idempotent
        assert api.get(f"/api/queues/{vh}/{q}").json()["arguments"] == {"x-max-length": 5}
        assert api.get(f"/api/exchanges/{vh}/{x}").json()["type"] == "fanout"
        assert api.get(f"/api/bindings/{vh}/e/{x}/q/{q}").json()[0]["routing_key"] == ""
        assert api.get(f"/api/users/{user}").json()["tags"] == ["management"]
        assert api.get(f"/api/permissions/{vh}/{user}").json()["read"] == ".*"
        exported = api.get("/api/definitions").json()
        assert any(item["name"] == q and item["vhost"] == vh for item in exported["queues"])
    finally:
        api.delete(f"/api/vhosts/{vh}")
        api.delete(f"/api/users/{user}")


def test_import_rejects_junk(api: httpx.Client) -> None:
    resp = api.post("/api/definitions", content=b"{nope",
                    headers={"content-type": "application/json"})
    assert resp.status_code == 400


def test_import_skips_server_named_queues(api: httpx.Client, uid: str) -> None:
    """An export may hold server-named queues (amq.gen-*); RabbitMQ's import accepts the
    document and does not recreate them (a client may not declare amq.* names)."""
    name = f"amq.gen-{uid}"
    doc = {"queues": [{"name": name, "vhost": "/", "durable": True, "auto_delete": False,
                       "arguments": {}}]}
    assert api.post("/api/definitions", json=doc).status_code == 204
    assert api.get(f"/api/queues/%2F/{name}").status_code == 404
