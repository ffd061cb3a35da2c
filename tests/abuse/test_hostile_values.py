"""A valid message never breaks anything (issue 12, class 1).

Properties are only checked for structure at publish; every later path decodes them on
behalf of other clients: recovery, dead-lettering, TTL expiry, priority, headers
routing, the management API. These tests publish values that are valid on the wire but
unusual (timestamps in microseconds, non-UTF-8 short strings, ``x-death`` of any shape,
tables nested thousands deep) and drive them through all of those paths.

The tests on the shared ``broker`` fixture encode RabbitMQ's behaviour and pass against
it (``SMARTBROKER_TEST_URL=amqp://guest:guest@localhost:5672/
SMARTBROKER_TEST_API=http://guest:guest@localhost:15672``, checked with 3.10.8); the ones
that restart the broker need a smartbroker process of their own.
"""

from __future__ import annotations

import struct
import time
import urllib.parse
from typing import Any

import httpx
import pika
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from smartbroker.cli.common import deep_json
from tests.abuse.bytewire import (
    RawClient,
    entry,
    headers_property,
    longstr,
    nested_table,
    shortstr,
    table,
)
from tests.management.scenarios import poll

TIMEOUT = 10.0


def raw(broker: Any) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.open()
    return client


def api_get(broker: Any, queue: str, count: int) -> list[dict[str, Any]]:
    """Management ``get`` with requeue: the messages stay in the queue."""
    if broker.api is None:
        pytest.skip("no management API for this broker")
    url = f"{broker.api}/api/queues/%2F/{urllib.parse.quote(queue, safe='')}/get"
    reply = httpx.post(url, json={"count": count, "ackmode": "ack_requeue_true",
                                  "encoding": "auto"}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text[:300]
    return deep_json(reply.text)  # json.loads, with room for its recursion per level


def drain(client: RawClient, queue: str, expected: int) -> list[tuple[bytes, bytes]]:
    """(property bytes, body) of ``expected`` messages, fetched with basic.get."""
    out: list[tuple[bytes, bytes]] = []

    def more() -> bool:
        got = client.get(queue)
        if got is not None:
            out.append((got[1], got[2]))
        return len(out) >= expected

    poll(more, what=f"{expected} message(s) in {queue}")
    return out


# --------------------------------------------------------------------------- deep tables

DEPTH = 3000  # about 21 KB per table: far beyond pika's and pamqp's recursion


def test_tables_nested_thousands_deep_work_on_every_path(broker: Any, uid: str) -> None:
    deep = entry("deep", b"F", nested_table(DEPTH))
    client = RawClient(broker.host, broker.port)
    # before tune-ok every frame is at most 4096 bytes (RabbitMQ's frame_min_size)
    client.open(client_properties=table(entry("deep", b"F", nested_table(500))))
    queue, exchange, bound = f"deep.q.{uid}", f"deep.hx.{uid}", f"deep.hq.{uid}"
    try:
        _deep_paths(broker, client, deep, queue, exchange, bound)
    finally:  # the shared broker's other tests list these objects
        client.queue_delete(queue)
        client.queue_delete(bound)
        client.exchange_delete(exchange)
        client.close()


def _deep_paths(broker: Any, client: RawClient, deep: bytes, queue: str, exchange: str,
                bound: str) -> None:
    client.queue_declare(queue, durable=True, arguments=table(deep))
    client.queue_declare(queue, durable=True, arguments=table(deep))  # equivalent redeclare
    client.exchange_declare(exchange, "headers", arguments=table(deep))
    client.queue_declare(bound)
    client.queue_bind(bound, exchange, "", table(entry("x-match", b"S", longstr(b"all")), deep))
    props = headers_property(table(deep), delivery_mode=2)
    client.publish("", queue, props, b"to the queue")
    client.publish(exchange, "", props, b"through the headers exchange")
    other = headers_property(table(entry("deep", b"F", nested_table(DEPTH, key="b"))))
    client.publish(exchange, "", other, b"a different deep value: not routed")
    assert drain(client, bound, 1) == [(props, b"through the headers exchange")]
    assert api_get(broker, queue, 1)[0]["payload"] == "to the queue"
    assert drain(client, queue, 1) == [(props, b"to the queue")]
    assert client.get(bound) is None
    for path in ("/api/queues", "/api/exchanges", "/api/bindings", "/api/connections"):
        if broker.api is not None:
            reply = httpx.get(f"{broker.api}{path}", timeout=TIMEOUT)
            assert reply.status_code == 200, (path, reply.text[:300])


def test_dead_letter_chain_of_200_queues_delivers(broker: Any, uid: str) -> None:
    """Dead-lettering is iterative: each hop is a TTL-0 queue dead-lettering to the next."""
    hops = 200
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        names = [f"chain.{uid}.{i}" for i in range(hops + 1)]
        for name, nxt in zip(names, names[1:], strict=False):
            ch.queue_declare(name, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                              "x-dead-letter-routing-key": nxt})
        ch.queue_declare(names[-1])
        ch.basic_publish("", names[0], b"down the chain")
        _, props, body = poll(lambda: _get(ch, names[-1]), what="message at the end of the chain")
        assert body == b"down the chain"
        deaths = props.headers["x-death"]
        assert len(deaths) == hops and {d["reason"] for d in deaths} == {"expired"}
        for name in names:
            ch.queue_delete(name)


def _get(ch: Any, queue: str) -> Any:
    got = ch.basic_get(queue, auto_ack=True)
    return got if got[0] is not None else None


# --------------------------------------------------------------------------- the reported case

MICROSECONDS = 1_764_000_000_000_000  # a timestamp in microseconds: beyond datetime


def test_microsecond_timestamp_with_priority_survives_dlx_ttl_headers_and_api(
        broker: Any, uid: str) -> None:
    props = pika.BasicProperties(priority=3, timestamp=MICROSECONDS, delivery_mode=2,
                                 content_type=b"\xff\xfe not utf-8",
                                 headers={"k": "v", "x-death": 5})
    work, dead, ttl, hx, hq = (f"ts.{part}.{uid}" for part in ("work", "dead", "ttl", "hx", "hq"))
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(dead)
        ch.queue_declare(work, durable=True, arguments={
            "x-max-priority": 5, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
        ch.queue_declare(ttl, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "",
                                          "x-dead-letter-routing-key": dead})
        ch.exchange_declare(hx, "headers", auto_delete=True)
        ch.queue_declare(hq, auto_delete=True)
        ch.queue_bind(hq, hx, arguments={"x-match": "any", "k": "v"})
        ch.basic_publish("", work, b"work", props)
        ch.basic_publish(hx, "", b"headers", props)
        assert api_get(broker, work, 1)[0]["properties"]["timestamp"] == MICROSECONDS
        method, got, _ = ch.basic_get(work)
        assert method is not None and got.timestamp == MICROSECONDS and got.priority == 3
        ch.basic_reject(method.delivery_tag, requeue=False)
        _, dl_props, dl_body = poll(lambda: _get(ch, dead), what="dead letter after reject")
        assert dl_body == b"work" and dl_props.timestamp == MICROSECONDS
        assert dl_props.headers["x-death"][0]["reason"] == "rejected"  # x-death: 5 replaced
        # TTL: the timer keeps expiring after (and behind) such a message
        for i in range(3):
            ch.basic_publish("", ttl, f"ttl-{i}".encode(), props)
        bodies = {poll(lambda: _get(ch, dead), what=f"expired message {i}")[2] for i in range(3)}
        assert bodies == {b"ttl-0", b"ttl-1", b"ttl-2"}
        assert poll(lambda: _get(ch, hq), what="headers-routed copy")[2] == b"headers"
        ch.queue_delete(work)
        ch.queue_delete(dead)
        ch.queue_delete(ttl)


def test_microsecond_timestamp_message_survives_restart(own_broker: Any, uid: str) -> None:
    queue = f"restart.{uid}"
    props = pika.BasicProperties(priority=3, timestamp=MICROSECONDS, delivery_mode=2,
                                 expiration="3600000", headers={"x-death": [{"count": "x"}]})
    with pika.BlockingConnection(pika.URLParameters(own_broker.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments={"x-max-priority": 5})
        ch.basic_publish("", queue, b"kept", props)
    own_broker.restart()
    with pika.BlockingConnection(pika.URLParameters(own_broker.url)) as conn:
        method, got, body = conn.channel().basic_get(queue, auto_ack=True)
    assert body == b"kept" and got.timestamp == MICROSECONDS and got.priority == 3


# --------------------------------------------------------------------------- fuzzed values

def _fixed(tag: bytes, size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size).map(lambda raw: tag + raw)


_SCALARS = st.one_of(
    _fixed(b"t", 1), _fixed(b"b", 1), _fixed(b"B", 1), _fixed(b"s", 2), _fixed(b"u", 2),
    _fixed(b"I", 4), _fixed(b"i", 4), _fixed(b"l", 8), _fixed(b"f", 4), _fixed(b"d", 8),
    _fixed(b"D", 5), _fixed(b"T", 8), st.just(b"V"),
    st.binary(max_size=40).map(lambda raw: b"S" + longstr(raw)),
    st.binary(max_size=40).map(lambda raw: b"x" + longstr(raw)),
)
_KEYS = st.one_of(st.sampled_from(["x-death", "count", "reason", "queue", "time",
                                   "x-delivery-count", "x-first-death-reason"]),
                  st.binary(max_size=12).filter(lambda key: key not in (b"CC", b"BCC")))
# CC and BCC route the message: anything but an array of long strings is refused at publish
_CC = st.tuples(st.sampled_from([b"CC", b"BCC"]), st.lists(
    st.binary(max_size=20).map(lambda raw: b"S" + longstr(raw)), max_size=3).map(
    lambda items: b"A" + longstr(b"".join(items))))


def _table(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(_KEYS, values), max_size=5).map(
        lambda pairs: b"F" + longstr(b"".join(shortstr(k) + v for k, v in pairs)))


def _array(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(values, max_size=4).map(lambda items: b"A" + longstr(b"".join(items)))


FIELD_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(_table(inner), _array(inner)),
                            max_leaves=20)
SHORTSTRS = st.binary(max_size=60).map(shortstr)


@st.composite
def property_blocks(draw: st.DrawFn) -> bytes:
    """Flags + values of a persistent message, valid on the wire, unusual in content:
    every property but ``user_id`` (checked against the login) and ``expiration``
    (parsed at publish) takes any value of its type."""
    parts: list[tuple[int, bytes]] = []
    for bit in (15, 14):  # content type, encoding
        if draw(st.booleans()):
            parts.append((bit, draw(SHORTSTRS)))
    if draw(st.booleans()):
        pairs = draw(st.lists(st.one_of(st.tuples(_KEYS, FIELD_VALUES), _CC), max_size=6))
        parts.append((13, longstr(b"".join(shortstr(k) + v for k, v in pairs))))
    parts.append((12, b"\x02"))  # persistent: the message must come back after a restart
    if draw(st.booleans()):
        parts.append((11, bytes((draw(st.integers(0, 255)),))))
    for bit in (10, 9, 7):  # correlation id, reply-to, message id
        if draw(st.booleans()):
            parts.append((bit, draw(SHORTSTRS)))
    if draw(st.booleans()):
        parts.append((6, struct.pack("!Q", draw(st.integers(0, 2**64 - 1)))))
    for bit in (5, 3, 2):  # type, app id, cluster id
        if draw(st.booleans()):
            parts.append((bit, draw(SHORTSTRS)))
    flags = 0
    for bit, _ in parts:
        flags |= 1 << bit
    return struct.pack("!H", flags) + b"".join(value for _, value in parts)


@pytest.mark.extension
@settings(max_examples=4, deadline=None, derandomize=True, phases=(Phase.generate,),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(blocks=st.lists(property_blocks(), min_size=15, max_size=25))
def test_fuzzed_property_values_survive_restart_dlx_ttl_and_api(
        own_broker: Any, blocks: list[bytes]) -> None:
    """publish -> restart -> priority delivery -> reject into a DLX -> TTL expiry into a
    DLX -> management get: every message arrives everywhere, byte for byte where the
    broker does not rewrite it, and the broker log holds no traceback (fixture)."""
    tag = f"{time.monotonic_ns()}"
    work, dead, ttl, expired = (f"fz.{part}.{tag}" for part in ("work", "dead", "ttl", "exp"))
    sent = {f"m{i}".encode(): block for i, block in enumerate(blocks)}
    client = raw(own_broker)
    client.queue_declare(dead, durable=True)
    client.queue_declare(expired, durable=True)
    client.queue_declare(work, durable=True, arguments=table(
        entry("x-max-priority", b"b", b"\x0a"), entry("x-dead-letter-exchange", b"S", longstr(b"")),
        entry("x-dead-letter-routing-key", b"S", longstr(dead.encode()))))
    client.queue_declare(ttl, durable=True, arguments=table(
        entry("x-message-ttl", b"I", struct.pack("!i", 0)),
        entry("x-dead-letter-exchange", b"S", longstr(b"")),
        entry("x-dead-letter-routing-key", b"S", longstr(expired.encode()))))
    client.confirm_select()
    for body, block in sent.items():
        client.publish("", work, block, body)
    client.wait_confirms(len(sent))
    client.close()
    own_broker.restart()

    client = raw(own_broker)
    got = {body: block for block, body in drain(client, work, len(sent))}
    assert got.keys() == sent.keys()
    for body, block in sent.items():  # byte for byte, but for BCC, which consumers never see
        if b"\x03BCCA" not in block:
            assert got[body] == block, body
    client.close()
    client = RawClient(own_broker.host, own_broker.port)
    client.open()
    for body, block in sent.items():  # again, now rejecting each into the DLX
        client.publish("", work, block, body)
    for _ in sent:
        tag_, _, body = poll(lambda: client.get(work, no_ack=False), what="message to reject")
        client.reject(tag_, requeue=False)
    assert {body for _, body in drain(client, dead, len(sent))} == set(sent)
    for body, block in sent.items():
        client.publish("", ttl, block, body)
    assert {body for _, body in poll(lambda: _count(own_broker, expired, len(sent)),
                                     what="every message expired into the DLX")} == set(sent)
    assert {doc["payload"] for doc in api_get(own_broker, expired, len(sent))} == \
        {body.decode() for body in sent}
    assert {body for _, body in drain(client, expired, len(sent))} == set(sent)
    client.close()


def _count(broker: Any, queue: str, expected: int) -> list[tuple[bytes, bytes]] | None:
    """The queue's messages via the API (requeued) once there are ``expected`` of them."""
    docs = api_get(broker, queue, expected)
    if len(docs) < expected:
        return None
    return [(b"", doc["payload"].encode()) for doc in docs]


def test_oversized_start_ok_is_refused_before_it_costs_anything(broker: Any) -> None:
    """Before tune-ok every frame is capped at 4096 bytes, as RabbitMQ's frame_min_size:
    a 128 KiB start-ok (a table of 130k void fields) ends the connection unread, and the
    broker goes on serving others."""
    voids = b"".join(entry(b"", b"V", b"") for _ in range(130_000))
    client = RawClient(broker.host, broker.port)
    try:
        client.start_ok(client_properties=longstr(voids))
        with pytest.raises((ConnectionError, OSError)):
            client.expect(10, 30)  # never tuned: the socket is closed instead
    finally:
        client.close()
    other = raw(broker)  # and everyone else is served as before
    name = f"after.start-ok.{time.monotonic_ns()}"
    other.queue_declare(name)
    other.queue_delete(name)
    other.close()


@pytest.mark.parametrize("mode", [0, 3, 255])
def test_unknown_delivery_mode_is_refused_as_rabbitmq_does(broker: Any, uid: str, mode: int) -> None:
    """RabbitMQ 3.10 accepts delivery modes 1 and 2 only: the channel is closed with 406."""
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.queue_declare(f"dm.{uid}", auto_delete=True)
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.basic_publish("", f"dm.{uid}", b"x", pika.BasicProperties(delivery_mode=mode))
        assert (refused.value.reply_code, refused.value.reply_text) == (
            406, f"PRECONDITION_FAILED - invalid message: {{delivery_mode_unknown,{mode}}}")
