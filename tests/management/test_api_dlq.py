"""/api/dlq: browse dead letters without consuming them, redrive them, purge them."""

from __future__ import annotations

import httpx
import pytest

from tests.management.scenarios import dead_letters

pytestmark = pytest.mark.extension


def test_inspect_shows_death_without_consuming(api: httpx.Client, broker_url: str, uid: str) -> None:
    with dead_letters(broker_url, uid, n=3) as d:
        resp = api.get(f"/api/dlq/%2F/{d.dlq}", params={"limit": 2})
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["name"] == d.dlq and doc["vhost"] == "/" and doc["messages"] == 3
        assert [m["position"] for m in doc["items"]] == [0, 1]
        first = doc["items"][0]
        assert first["reason"] == "rejected" and first["queue"] == d.work
        assert first["exchange"] == d.exchange and first["routing_keys"] == [d.routing_key]
        assert first["count"] == 1 and first["deaths"] == 1
        assert first["body_preview"] == "order-0" and first["body_size"] == 7
        assert first["time"].startswith("20")
        assert d.ready(d.dlq) == 3  # browsing consumed nothing
        listed = {q["name"]: q for q in api.get("/api/dlq/%2F").json()}
        assert listed[d.dlq]["dead_letter_sources"] == [d.work]
        assert listed[d.dlq]["messages"] == 3
        assert d.work not in listed
        assert d.dlq in [q["name"] for q in api.get("/api/dlq").json()]


def test_redrive_after_a_fix(api: httpx.Client, broker_url: str, uid: str) -> None:
    """A consumer bug rejected orders into the DLQ; after the fix they go back to the work
    queue through their original exchange and routing key, and the fixed consumer gets them."""
    with dead_letters(broker_url, uid, n=4) as d:
        path = f"/api/dlq/%2F/{d.dlq}/redrive"
        plan = api.post(path, json={"dry_run": True}).json()
        assert plan["moved"] == 0 and plan["dry_run"] is True and plan["remaining"] == 4
        assert plan["planned"] == [{"exchange": d.exchange, "routing_keys": [d.routing_key]}] * 4
        assert d.ready(d.dlq) == 4 and d.ready(d.work) == 0

        first = api.post(path, json={"limit": 1}).json()
        assert (first["moved"], first["remaining"]) == (1, 3)
        rest = api.post(path, json={}).json()
        assert (rest["moved"], rest["unroutable"], rest["remaining"]) == (3, 0, 0)
        assert d.ready(d.dlq) == 0

        got = d.drain(d.work, 4)
        assert [body for body, _ in got] == [f"order-{i}" for i in range(4)]
        death = got[0][1]["x-death"][0]  # the history travels with the message
        assert death["reason"] == "rejected" and death["queue"] == d.work


def test_redrive_unroutable_stays_in_dlq(api: httpx.Client, broker_url: str, uid: str) -> None:
    nowhere = f"test.nowhere.{uid}"
    assert api.put(f"/api/exchanges/%2F/{nowhere}", json={"type": "fanout"}).status_code == 201
    try:
        with dead_letters(broker_url, uid, n=2) as d:
            doc = api.post(f"/api/dlq/%2F/{d.dlq}/redrive", json={"to_exchange": nowhere}).json()
            assert (doc["moved"], doc["unroutable"], doc["remaining"]) == (0, 2, 2)
            assert d.ready(d.dlq) == 2
    finally:
        api.delete(f"/api/exchanges/%2F/{nowhere}")


def test_dlq_errors(api: httpx.Client, broker_url: str, uid: str) -> None:
    assert api.get(f"/api/dlq/%2F/test.missing.{uid}").status_code == 404
    assert api.get(f"/api/dlq/nosuchvhost.{uid}/x").status_code == 404
    with dead_letters(broker_url, uid, n=1) as d:
        resp = api.post(f"/api/dlq/%2F/{d.dlq}/redrive", json={"to_exchange": f"no.such.{uid}"})
        assert resp.status_code == 404
        assert resp.json()["reason"] == f"no exchange 'no.such.{uid}' in vhost '/'"
        assert api.get(f"/api/dlq/%2F/{d.dlq}", params={"limit": -1}).status_code == 400
        assert api.post(f"/api/dlq/%2F/{d.dlq}/redrive", json={"limit": -1}).status_code == 400
        assert d.ready(d.dlq) == 1


def test_dlq_purge_is_rabbitmq_purge(api: httpx.Client, broker_url: str, uid: str) -> None:
    with dead_letters(broker_url, uid, n=2) as d:
        assert api.delete(f"/api/queues/%2F/{d.dlq}/contents").status_code == 204
        assert api.get(f"/api/dlq/%2F/{d.dlq}").json() == {
            "name": d.dlq, "vhost": "/", "messages": 0, "items": []}


def test_stream_is_not_a_dlq(api: httpx.Client, qname: str) -> None:
    body = {"durable": True, "arguments": {"x-queue-type": "stream"}}
    assert api.put(f"/api/queues/%2F/{qname}", json=body).status_code == 201
    try:
        resp = api.get(f"/api/dlq/%2F/{qname}")
        assert resp.status_code == 400
        assert resp.json()["reason"] == (f"queue '{qname}' in vhost '/' is a stream queue, "
                                         f"not a dead-letter queue")
    finally:
        api.delete(f"/api/queues/%2F/{qname}")
