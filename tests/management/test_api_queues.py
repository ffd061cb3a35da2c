"""Queues: declare, read, publish/get through the API, purge, delete."""

from __future__ import annotations

import base64

import httpx
import pika


def test_queue_fields(api: httpx.Client, queue: str, queue_state) -> None:
    doc = queue_state(queue, messages=0)
    for key in ("name", "vhost", "messages", "messages_ready", "messages_unacknowledged",
                "consumers", "arguments", "type", "durable", "auto_delete", "exclusive", "state"):
        assert key in doc, key
    assert doc["name"] == queue and doc["vhost"] == "/" and doc["type"] == "classic"
    assert doc["durable"] is False and doc["state"] == "running"
    assert queue in [q["name"] for q in api.get("/api/queues/%2F").json()]
    assert queue in [q["name"] for q in api.get("/api/queues").json()]


def test_put_queue_created_then_no_content_then_inequivalent(api: httpx.Client, qname: str) -> None:
    args = {"x-max-length": 10}
    try:
        assert api.put(f"/api/queues/%2F/{qname}", json={"durable": True, "arguments": args}).status_code == 201
        assert api.put(f"/api/queues/%2F/{qname}", json={"durable": True, "arguments": args}).status_code == 204
        resp = api.put(f"/api/queues/%2F/{qname}", json={"durable": False, "arguments": args})
        assert resp.status_code == 400
        assert "inequivalent arg 'durable'" in resp.json()["reason"]
        assert api.get(f"/api/queues/%2F/{qname}").json()["arguments"] == args
    finally:
        api.delete(f"/api/queues/%2F/{qname}")


def test_publish_and_get_ack_requeue_true_is_a_peek(api: httpx.Client, queue: str, pub,
                                                    queue_state) -> None:
    assert pub("", queue, "hello", headers={"h": 1}, delivery_mode=2, content_type="text/plain") is True
    body = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}
    first = api.post(f"/api/queues/%2F/{queue}/get", json=body).json()
    assert len(first) == 1
    msg = first[0]
    assert msg["payload"] == "hello" and msg["payload_encoding"] == "string"
    assert msg["payload_bytes"] == 5 and msg["redelivered"] is False
    assert msg["exchange"] == "" and msg["routing_key"] == queue
    assert msg["properties"]["headers"] == {"h": 1}
    assert msg["properties"]["delivery_mode"] == 2
    assert msg["message_count"] == 0
    second = api.post(f"/api/queues/%2F/{queue}/get", json=body).json()
    assert second[0]["redelivered"] is True
    queue_state(queue, messages_ready=1)


def test_get_ack_requeue_false_removes(api: httpx.Client, queue: str, pub, queue_state) -> None:
    for i in range(3):
        pub("", queue, f"m{i}")
    body = {"count": 2, "ackmode": "ack_requeue_false", "encoding": "auto"}
    got = api.post(f"/api/queues/%2F/{queue}/get", json=body).json()
    assert [m["payload"] for m in got] == ["m0", "m1"]
    assert [m["message_count"] for m in got] == [2, 1]
    queue_state(queue, messages_ready=1, messages_unacknowledged=0)
    body["ackmode"] = "reject_requeue_false"
    assert [m["payload"] for m in api.post(f"/api/queues/%2F/{queue}/get", json=body).json()] == ["m2"]
    queue_state(queue, messages=0)


def test_get_base64_and_truncate(api: httpx.Client, queue: str) -> None:
    raw = b"\xff\xfe binary"
    resp = api.post("/api/exchanges/%2F/amq.default/publish",
                    json={"properties": {}, "routing_key": queue, "payload_encoding": "base64",
                          "payload": base64.b64encode(raw).decode()})
    assert resp.json() == {"routed": True}
    body = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 4}
    msg = api.post(f"/api/queues/%2F/{queue}/get", json=body).json()[0]
    assert msg["payload_encoding"] == "base64"
    assert base64.b64decode(msg["payload"]) == raw[:4]
    assert msg["payload_bytes"] == len(raw)


def test_get_requires_ackmode_and_encoding(api: httpx.Client, queue: str) -> None:
    resp = api.post(f"/api/queues/%2F/{queue}/get", json={"count": 1})
    assert resp.status_code == 400
    assert "ackmode" in resp.json()["reason"]


def test_publish_unroutable_and_missing_properties(api: httpx.Client, exchange: str) -> None:
    resp = api.post(f"/api/exchanges/%2F/{exchange}/publish",
                    json={"properties": {}, "routing_key": "nowhere", "payload": "x",
                          "payload_encoding": "string"})
    assert resp.json() == {"routed": False}
    resp = api.post(f"/api/exchanges/%2F/{exchange}/publish",
                    json={"routing_key": "k", "payload": "x", "payload_encoding": "string"})
    assert resp.status_code == 400


def test_publish_to_missing_exchange_is_400(api: httpx.Client, uid: str) -> None:
    """RabbitMQ 3.10.8 answers 400 with the channel error's text, not 404."""
    resp = api.post(f"/api/exchanges/%2F/nope.{uid}/publish",
                    json={"properties": {}, "routing_key": "k", "payload": "x",
                          "payload_encoding": "string"})
    assert resp.status_code == 400
    assert resp.json() == {"error": "bad_request",
                           "reason": f"404 NOT_FOUND - no exchange 'nope.{uid}' in vhost '/'"}


def test_purge_and_delete(api: httpx.Client, queue: str, pub, queue_state) -> None:
    for _ in range(3):
        pub("", queue, "x")
    assert api.delete(f"/api/queues/%2F/{queue}/contents").status_code == 204
    queue_state(queue, messages=0)
    pub("", queue, "x")
    queue_state(queue, messages=1)
    resp = api.delete(f"/api/queues/%2F/{queue}", params={"if-empty": "true"})
    assert resp.status_code == 400
    assert api.delete(f"/api/queues/%2F/{queue}").status_code == 204
    assert api.get(f"/api/queues/%2F/{queue}").status_code == 404
    assert api.delete(f"/api/queues/%2F/{queue}").status_code == 404


def test_api_publish_reaches_amqp_consumer_and_counts(api: httpx.Client, queue: str, pub,
                                                      broker_url: str, queue_state) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        pub("", queue, "via-http")
        method, props, body = ch.basic_get(queue)
        assert body == b"via-http"
        queue_state(queue, messages_unacknowledged=1, messages=1)
        ch.basic_ack(method.delivery_tag)
        ch.basic_publish("", queue, b"via-amqp")
        conn.process_data_events(0)
        got = api.post(f"/api/queues/%2F/{queue}/get",
                       json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).json()
        assert got[0]["payload"] == "via-amqp"
    finally:
        conn.close()


def test_queue_name_with_slash_and_space(api: httpx.Client, uid: str) -> None:
    name = f"a/b c.{uid}"
    quoted = httpx.URL(f"/api/queues/%2F/{'a%2Fb%20c'}.{uid}")
    try:
        assert api.put(quoted, json={}).status_code == 201
        assert api.get(quoted).json()["name"] == name
    finally:
        api.delete(quoted)


def test_publish_rate_is_reported(api, broker_url: str, qname: str) -> None:
    """message_stats.publish_details.rate reflects recent publishing (sampled every
    collect_statistics_interval, 5 s by default as in RabbitMQ: this waits up to 15 s)."""
    import time

    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    rate = 0.0
    deadline = time.monotonic() + 15
    while rate <= 0 and time.monotonic() < deadline:
        for _ in range(50):
            ch.basic_publish("", qname, b"x")
        conn.process_data_events(time_limit=0.3)
        stats = api.get(f"/api/queues/%2F/{qname}").json().get("message_stats", {})
        rate = stats.get("publish_details", {}).get("rate", 0.0)
    conn.close()
    assert rate > 0
