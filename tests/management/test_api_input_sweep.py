"""Junk in request bodies and list options: always a 4xx with RabbitMQ's JSON error shape,
never a 500 (and, checked at fixture teardown, never a traceback in the broker log).

Smartbroker's own: RabbitMQ keeps Erlang bignums and stores some of these (a 2**70
``x-max-length``, a 300-byte binding key); an AMQP table cannot carry them, so smartbroker
refuses them with 400 when they arrive.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.extension

HUGE = 2 ** 70
LONG = "k" * 300
PUB = {"routing_key": "k", "payload": "x", "payload_encoding": "string"}


def cases(q: str, x: str) -> list[tuple[str, str, Any]]:
    """(method, path, json body) that must each be refused with a 4xx."""
    v = "%2F"
    out: list[tuple[str, str, Any]] = []
    for args in ({"x-max-length": HUGE}, {"x-max-length": 1e30}, {"x-max-length": [1]},
                 {"x-max-length": None}, {"x-message-ttl": {"a": 1}}, {"foo": -HUGE},
                 {"x-dead-letter-exchange": ["a"]}, {"x-max-priority": "high"}):
        out.append(("PUT", f"/api/queues/{v}/{q}-bad", {"arguments": args}))
    for body in ({"arguments": []}, {"durable": [True]}, {"auto_delete": {"a": 1}}):
        out.append(("PUT", f"/api/queues/{v}/{q}-bad", body))
    for body in ({"type": ["direct"]}, {"type": "direct", "arguments": {"x": HUGE}},
                 {"type": "direct", "arguments": {"alternate-exchange": {"a": 1}}},
                 {"type": None}):
        out.append(("PUT", f"/api/exchanges/{v}/{x}-bad", body))
    out.append(("PUT", f"/api/exchanges/{v}/{LONG}", {"type": "direct"}))
    for body in ({"routing_key": LONG}, {"routing_key": ["a"]}, {"routing_key": None},
                 {"routing_key": "a", "arguments": {"x": HUGE}}, {"arguments": "nope"}):
        out.append(("POST", f"/api/bindings/{v}/e/{x}/q/{q}", body))
    for props in ({"priority": HUGE}, {"priority": 300}, {"priority": "high"},
                  {"delivery_mode": None}, {"headers": {"a": HUGE}}, {"headers": [1]},
                  {"timestamp": 1e30}, {"timestamp": -5}, {"content_type": 5},
                  {"message_id": LONG}, {"user_id": ["guest"]}, {"expiration": []}):
        out.append(("POST", f"/api/exchanges/{v}/{x}/publish", {**PUB, "properties": props}))
    out.append(("POST", f"/api/exchanges/{v}/{x}/publish",
                {**PUB, "routing_key": LONG, "properties": {}}))
    out.append(("POST", f"/api/exchanges/{v}/{x}/publish", {**PUB, "properties": []}))
    for body in ({"pattern": "^zz", "definition": {"max-length": HUGE}},
                 {"pattern": ["a"], "definition": {"max-length": 1}},
                 {"pattern": "^zz", "definition": {"max-length": 1}, "priority": HUGE},
                 {"pattern": "(", "definition": {"max-length": 1}},
                 {"pattern": "^zz", "definition": []}, {"pattern": "^zz", "definition": None},
                 ["not", "an", "object"]):
        out.append(("PUT", f"/api/policies/{v}/sweep-{q}", body))
    for body in ({"count": HUGE, "ackmode": "ack_requeue_true", "encoding": "auto"},
                 {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto",
                  "truncate": HUGE},
                 {"count": "1", "ackmode": 5, "encoding": "auto"}):
        out.append(("POST", f"/api/queues/{v}/{q}/get", body))
    for body in ({"value": HUGE}, {"value": "x"}, {"value": [1]}, {"value": None}):
        out.append(("PUT", f"/api/vhost-limits/{v}/max-queues", body))
    for body in ({"configure": "(", "write": ".*", "read": ".*"},
                 {"configure": None, "write": ".*", "read": ".*"}):
        out.append(("PUT", f"/api/permissions/{v}/guest", body))
    for doc in ({"queues": [{"name": 5}]}, {"queues": {"name": "a"}},
                {"queues": [{"name": "a", "vhost": "/", "arguments": {"x-max-length": HUGE}}]},
                {"permissions": [{"user": "guest", "vhost": "/", "configure": "["}]}, []):
        out.append(("POST", "/api/definitions", doc))
    deep = '{"arguments": {"x": ' + '{"a": ' * 5000 + "{}" + "}" * 5000 + "}}"
    out.append(("PUT", f"/api/queues/{v}/{q}-deep", deep))  # pre-encoded: json would recurse
    return out


def test_junk_bodies_are_4xx(api: httpx.Client, queue: str, exchange: str) -> None:
    wrong = []
    for method, path, body in cases(queue, exchange):
        resp = (api.request(method, path, content=body) if isinstance(body, str)
                else api.request(method, path, json=body))
        ok = 400 <= resp.status_code < 500
        try:
            doc = resp.json()
            ok = ok and isinstance(doc, dict) and set(doc) == {"error", "reason"}
        except ValueError:
            ok = False
        if not ok:
            wrong.append((method, path[:60], str(body)[:80], resp.status_code, resp.text[:120]))
    assert not wrong, "\n".join(map(str, wrong))
    assert api.get("/api/permissions/%2F/guest").json()["configure"] == ".*"


@pytest.mark.parametrize(("params", "code"), [
    ({"sort": "arguments"}, 200), ({"sort": "foo.bar.baz"}, 200),
    ({"sort": "name", "sort_reverse": "maybe"}, 200),  # RabbitMQ 3.10.8: a 500 for queues
    ({"sort": "message_stats.publish"}, 200), ({"page": "0"}, 400), ({"page": "x"}, 400),
    ({"page_size": "-1"}, 200),  # no page: no paging, page_size unread (as RabbitMQ)
    ({"page": "1", "page_size": str(HUGE)}, 400),
    ({"name": "(", "use_regex": "true"}, 400),  # RabbitMQ: 200 and the filter dropped
    ({"name": "(a+)+$", "use_regex": "true", "page": "1"}, 200),  # RE2: linear time
])
@pytest.mark.parametrize("what", ["queues", "exchanges", "connections", "channels", "dlq",
                                  "streams"])
def test_list_options_never_500(api: httpx.Client, queue: str, what: str,
                                params: dict[str, str], code: int) -> None:
    """Each odd list option gets one definite answer: the list, or RabbitMQ's error shape."""
    resp = api.get(f"/api/{what}", params=params)
    assert resp.status_code == code, resp.text[:200]
    if code == 400:
        assert set(resp.json()) == {"error", "reason"}
    else:
        doc = resp.json()  # one page of the list when a page was asked for, else the list
        assert isinstance(doc["items"] if "page" in params else doc, list)
