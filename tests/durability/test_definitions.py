"""Definitions across a graceful restart and across kill -9.

Durable exchanges, durable queues with their arguments, bindings between durable objects,
policies, users, permissions and vhosts come back; transient and exclusive objects, and
whatever was deleted, do not. Checked the way a client sees it: passive declares,
inequivalent redeclares (406), routing, limits in effect, logins, and the management API.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.extension

MODES = ["restart", "kill"]


@pytest.fixture
def sb(shared_sb):
    """One broker for the module: each test bounces it itself and checks only the objects
    it named, so a fresh broker per test proved nothing more and cost a start and a stop."""
    return shared_sb


def bounce(sb, mode: str) -> None:
    if mode == "restart":
        sb.restart()
    else:
        sb.kill_restart()


def closed_with(code: int, fn, *args, **kwargs) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        fn(*args, **kwargs)
    assert info.value.reply_code == code, info.value.reply_text


def routed_to(sb, queue: str) -> list[bytes]:
    return [m.body for m in sb.drain(queue)]


def bindings_from(sb, exchange: str) -> list[dict]:
    status, bindings = sb.api("GET", "/bindings/%2F")
    assert status == 200
    return [b for b in bindings if b["source"] == exchange]


QUEUE_ARGS = {
    "x-max-length": 3,
    "x-message-ttl": 3_600_000,
    "x-dead-letter-exchange": "dlx",
    "x-dead-letter-routing-key": "dead",
    "x-max-priority": 5,
}


@pytest.mark.parametrize("mode", MODES)
def test_exchanges_queues_and_bindings_survive(sb, uid: str, mode: str) -> None:
    x = {kind: f"x.{kind}.{uid}" for kind in ("direct", "fanout", "topic", "headers", "ae")}
    q = {name: f"q.{name}.{uid}" for name in ("direct", "fanout", "topic", "headers", "ae", "args")}
    conn = sb.connect()
    ch = conn.channel()
    ch.exchange_declare(x["ae"], "fanout", durable=True)
    ch.exchange_declare(x["direct"], "direct", durable=True, arguments={"alternate-exchange": x["ae"]})
    ch.exchange_declare(x["fanout"], "fanout", durable=True)
    ch.exchange_declare(x["topic"], "topic", durable=True)
    ch.exchange_declare(x["headers"], "headers", durable=True)
    for name in q.values():
        ch.queue_declare(name, durable=True, arguments=QUEUE_ARGS if name == q["args"] else None)
    ch.queue_bind(q["direct"], x["direct"], "rk")
    ch.queue_bind(q["ae"], x["ae"])
    ch.queue_bind(q["topic"], x["topic"], "a.*.c")
    ch.exchange_bind(x["fanout"], x["topic"], "e2e.#")  # exchange-to-exchange
    ch.queue_bind(q["fanout"], x["fanout"])
    ch.queue_bind(q["headers"], x["headers"], arguments={"x-match": "all", "k": "v", "n": 1})
    ch.queue_bind(q["args"], x["direct"], "limited")
    conn.close()

    bounce(sb, mode)

    conn = sb.connect()
    ch = conn.channel()
    for name in q.values():
        ch.queue_declare(name, passive=True)
    ch.queue_declare(q["args"], durable=True, arguments=QUEUE_ARGS)  # equivalent: fine
    ch.exchange_declare(x["direct"], "direct", durable=True, arguments={"alternate-exchange": x["ae"]})
    closed_with(406, ch.queue_declare, q["args"], durable=True,
                arguments={**QUEUE_ARGS, "x-max-length": 4})
    ch = conn.channel()
    closed_with(406, ch.exchange_declare, x["topic"], "direct", durable=True)
    ch = conn.channel()
    ch.confirm_delivery()

    def send(exchange: str, key: str, body: bytes, headers: dict | None = None) -> None:
        ch.basic_publish(exchange, key, body, pika.BasicProperties(delivery_mode=2, headers=headers))

    send(x["direct"], "rk", b"direct")
    send(x["direct"], "nobody-binds-this", b"to-ae")
    send(x["topic"], "a.b.c", b"topic")
    send(x["topic"], "e2e.anything", b"e2e")
    send(x["headers"], "", b"all-match", {"k": "v", "n": 1})
    send(x["headers"], "", b"half-match", {"k": "v"})
    for i in range(5):
        send(x["direct"], "limited", b"%d" % i)
    conn.close()
    assert routed_to(sb, q["direct"]) == [b"direct"]
    assert routed_to(sb, q["ae"]) == [b"to-ae"]
    assert routed_to(sb, q["topic"]) == [b"topic"]
    assert routed_to(sb, q["fanout"]) == [b"e2e"]
    assert routed_to(sb, q["headers"]) == [b"all-match"]
    assert routed_to(sb, q["args"]) == [b"2", b"3", b"4"]  # x-max-length 3 still in force
    status, queue = sb.api("GET", f"/queues/%2F/{q['args']}")
    assert status == 200 and queue["durable"] is True
    assert queue["arguments"] == QUEUE_ARGS
    status, bindings = sb.api("GET", f"/queues/%2F/{q['headers']}/bindings")
    assert {"source": x["headers"], "arguments": {"x-match": "all", "k": "v", "n": 1}} in [
        {"source": b["source"], "arguments": b["arguments"]} for b in bindings]


@pytest.mark.parametrize("mode", MODES)
def test_transient_and_exclusive_objects_do_not_survive(sb, uid: str, mode: str) -> None:
    durable_x, transient_x = f"x.d.{uid}", f"x.t.{uid}"
    durable_q, transient_q, exclusive_q = f"q.d.{uid}", f"q.t.{uid}", f"q.x.{uid}"
    owner = sb.connect()  # stays open until the broker goes down
    ch = owner.channel()
    ch.exchange_declare(durable_x, "direct", durable=True)
    ch.exchange_declare(transient_x, "direct", durable=False)
    ch.queue_declare(durable_q, durable=True)
    ch.queue_declare(transient_q, durable=False)
    ch.queue_declare(exclusive_q, durable=True, exclusive=True)
    ch.queue_bind(durable_q, durable_x, "kept")
    ch.queue_bind(durable_q, transient_x, "gone-with-its-exchange")
    ch.queue_bind(transient_q, durable_x, "gone-with-its-queue")
    ch.confirm_delivery()
    ch.basic_publish("", exclusive_q, b"x", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", transient_q, b"t", pika.BasicProperties(delivery_mode=2))
    sb.keep_answering(owner)

    bounce(sb, mode)

    assert sb.exchange_exists(durable_x)
    assert not sb.exchange_exists(transient_x)
    assert sb.queue_exists(durable_q)
    assert not sb.queue_exists(transient_q)
    assert not sb.queue_exists(exclusive_q)
    status, bindings = sb.api("GET", f"/queues/%2F/{durable_q}/bindings")
    assert status == 200
    assert sorted((b["source"], b["routing_key"]) for b in bindings) == [
        ("", durable_q), (durable_x, "kept")]
    assert [b["destination"] for b in bindings_from(sb, durable_x)] == [durable_q]


@pytest.mark.parametrize("mode", MODES)
def test_deleted_definitions_stay_deleted(sb, uid: str, mode: str) -> None:
    x, x2, q, q2 = f"x.{uid}", f"x2.{uid}", f"q.{uid}", f"q2.{uid}"
    conn = sb.connect()
    ch = conn.channel()
    ch.exchange_declare(x, "topic", durable=True)
    ch.exchange_declare(x2, "fanout", durable=True)
    ch.queue_declare(q, durable=True)
    ch.queue_declare(q2, durable=True)
    ch.queue_bind(q, x, "one")
    ch.queue_bind(q, x, "two")
    ch.queue_bind(q2, x2)
    ch.exchange_bind(x2, x, "e2e")
    ch.queue_unbind(q, x, "one")
    ch.exchange_unbind(x2, x, "e2e")
    ch.queue_delete(q2)
    ch.exchange_delete(x2)
    conn.close()

    bounce(sb, mode)

    assert not sb.exchange_exists(x2)
    assert not sb.queue_exists(q2)
    assert [(b["destination"], b["routing_key"]) for b in bindings_from(sb, x)] == [(q, "two")]


@pytest.mark.parametrize("mode", MODES)
def test_policies_survive(sb, uid: str, mode: str) -> None:
    cap = {"pattern": f"^pol\\.{uid}\\.", "definition": {"max-length": 2},
           "apply-to": "queues", "priority": 1}
    assert sb.api("PUT", f"/policies/%2F/cap-{uid}", cap)[0] == 201
    assert sb.api("PUT", f"/policies/%2F/gone-{uid}", {**cap, "pattern": "^never"})[0] == 201
    assert sb.api("DELETE", f"/policies/%2F/gone-{uid}")[0] == 204
    queue = f"pol.{uid}.q"
    sb.declare(queue)

    bounce(sb, mode)

    status, got = sb.api("GET", f"/policies/%2F/cap-{uid}")
    assert status == 200
    assert {k: got[k] for k in cap} == cap
    assert sb.api("GET", f"/policies/%2F/gone-{uid}")[0] == 404
    sb.publish(queue, [b"1", b"2", b"3", b"4"])
    assert [m.body for m in sb.drain(queue)] == [b"3", b"4"]  # the policy's limit applies


@pytest.mark.parametrize("mode", MODES)
def test_users_survive(sb, uid: str, mode: str) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    assert sb.api("PUT", f"/users/{alice}", {"password": "first", "tags": ""})[0] == 201
    assert sb.api("PUT", f"/users/{alice}", {"password": "second", "tags": "management"})[0] == 204
    assert sb.api("PUT", f"/users/{bob}", {"password": "bob", "tags": ""})[0] == 201
    assert sb.api("DELETE", f"/users/{bob}")[0] == 204
    perms = {"configure": "^alice\\.", "write": ".*", "read": ".*"}
    assert sb.api("PUT", f"/permissions/%2F/{alice}", perms)[0] == 201

    bounce(sb, mode)

    status, user = sb.api("GET", f"/users/{alice}")
    assert status == 200 and user["tags"] in (["management"], "management")
    assert sb.api("GET", f"/users/{bob}")[0] == 404
    status, got = sb.api("GET", f"/permissions/%2F/{alice}")
    assert status == 200 and {k: got[k] for k in perms} == perms
    url = f"amqp://{alice}:second@127.0.0.1:{sb.proc.port}/"
    conn = pika.BlockingConnection(pika.URLParameters(url))  # the new password logs in
    conn.close()
    for user, password in ((alice, "first"), (bob, "bob")):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(
                f"amqp://{user}:{password}@127.0.0.1:{sb.proc.port}/"))
    status, _ = sb.api("GET", "/overview", user=alice, password="second")
    assert status == 200  # management tag: may use the API


@pytest.mark.parametrize("mode", MODES)
def test_topic_permissions_survive_and_are_exported(sb, uid: str, mode: str) -> None:
    carol = f"carol-{uid}"
    assert sb.api("PUT", f"/users/{carol}", {"password": "c", "tags": ""})[0] == 201
    topic = {"exchange": "amq.topic", "write": "^{username}\\.", "read": "^public\\."}
    assert sb.api("PUT", f"/topic-permissions/%2F/{carol}", topic)[0] == 201

    bounce(sb, mode)

    status, got = sb.api("GET", f"/topic-permissions/%2F/{carol}")
    assert status == 200 and [{k: p[k] for k in topic} for p in got] == [topic]
    status, exported = sb.api("GET", "/definitions")
    assert {**topic, "user": carol, "vhost": "/"} in exported["topic_permissions"]
    assert sb.api("DELETE", f"/users/{carol}")[0] == 204
    bounce(sb, mode)
    assert sb.api("GET", f"/topic-permissions/%2F/{carol}")[0] == 404


@pytest.mark.parametrize("mode", MODES)
def test_vhost_and_its_contents_survive(sb, uid: str, mode: str) -> None:
    vhost = f"vh-{uid}"
    assert sb.api("PUT", f"/vhosts/{vhost}", {})[0] == 201
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    # 204: as RabbitMQ, creating the vhost already gave its creator (guest) permissions
    assert sb.api("PUT", f"/permissions/{vhost}/guest", perms)[0] == 204
    url = f"amqp://guest:guest@127.0.0.1:{sb.proc.port}/{vhost}"
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare("inside", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "inside", b"in-vhost", pika.BasicProperties(delivery_mode=2))
    conn.close()

    bounce(sb, mode)

    assert sb.api("GET", f"/vhosts/{vhost}")[0] == 200
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    method, _props, body = ch.basic_get("inside", auto_ack=True)
    assert body == b"in-vhost" and not method.redelivered
    conn.close()
    assert sb.queue_exists("inside") is False  # the default vhost has no such queue
