"""Routing semantics of the direct, fanout, topic, headers and default exchanges."""

from __future__ import annotations

import aio_pika
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, drain, run

TOPIC_KEYS = ["", "a", "b", "a.b", "a.b.c", "a..b", "a.x.b", "a.x.y.b", ".", "..", ".a", "a.", "A.b", "b.a.c", "x.a"]
EVERYTHING = TOPIC_KEYS
# pattern -> routing keys it matches, recorded from RabbitMQ 3.10.  Notable: the empty
# routing key has *zero* words ("*" does not match it, "#" does); "." is two empty words.
TOPIC_TABLE: dict[str, list[str]] = {
    "*": ["a", "b"],
    "#": EVERYTHING,
    "#.#": EVERYTHING,
    "a.*": ["a.b", "a."],
    "a.#": ["a", "a.b", "a.b.c", "a..b", "a.x.b", "a.x.y.b", "a."],
    "a.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "a.#.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "*.#": [k for k in EVERYTHING if k != ""],
    "#.*": [k for k in EVERYTHING if k != ""],
    "#.b": ["b", "a.b", "a..b", "a.x.b", "a.x.y.b", "A.b"],
    "a..b": ["a..b"],
    "a.*.b": ["a..b", "a.x.b"],
    "*.*": ["a.b", ".", ".a", "a.", "A.b", "x.a"],
    "*.*.#": ["a.b", "a.b.c", "a..b", "a.x.b", "a.x.y.b", ".", "..", ".a", "a.", "A.b", "b.a.c", "x.a"],
    "#.a.#": ["a", "a.b", "a.b.c", "a..b", "a.x.b", "a.x.y.b", ".a", "a.", "b.a.c", "x.a"],
    "*.a": [".a", "x.a"],
    "": [""],
    ".": ["."],
    "a.b": ["a.b"],
    "A.b": ["A.b"],
}


def test_topic_matching_table(ch: BlockingChannel, xname: str) -> None:
    """`*` = exactly one word, `#` = zero or more words, empty words count, case-sensitive."""
    ch.exchange_declare(xname, "topic")
    queues = {}
    for pattern in TOPIC_TABLE:
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, xname, pattern)
        queues[pattern] = q
    for key in TOPIC_KEYS:
        ch.basic_publish(xname, key, key.encode())
    got = {p: [b.decode() for b in drain(ch, q)] for p, q in queues.items()}
    assert got == TOPIC_TABLE


def test_queue_with_several_matching_bindings_gets_one_copy(ch: BlockingChannel, xname: str) -> None:
    """A queue bound by several matching patterns receives a message once."""
    ch.exchange_declare(xname, "topic")
    q = ch.queue_declare("", exclusive=True).method.queue
    for pattern in ("a.*", "#", "a.b", "*.b"):
        ch.queue_bind(q, xname, pattern)
    ch.basic_publish(xname, "a.b", b"m")
    assert drain(ch, q) == [b"m"]


def test_topic_unbind_one_pattern(ch: BlockingChannel, xname: str) -> None:
    ch.exchange_declare(xname, "topic")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, xname, "a.*")
    ch.queue_bind(q, xname, "*.b")
    ch.queue_unbind(q, xname, "a.*")
    for key in ("a.x", "x.b"):
        ch.basic_publish(xname, key, key.encode())
    assert drain(ch, q) == [b"x.b"]


def test_direct_exact_key(ch: BlockingChannel, xname: str) -> None:
    """Direct: exact, case-sensitive key match; several queues may share a key."""
    ch.exchange_declare(xname, "direct")
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, xname, "k")
    ch.queue_bind(q2, xname, "k")
    ch.queue_bind(q2, xname, "other")
    for key in ("k", "K", "other", "k.x", ""):
        ch.basic_publish(xname, key, key.encode())
    assert drain(ch, q1) == [b"k"]
    assert drain(ch, q2) == [b"k", b"other"]


def test_fanout_ignores_key(ch: BlockingChannel, xname: str) -> None:
    """Fanout: every bound queue gets a copy regardless of routing/binding keys."""
    ch.exchange_declare(xname, "fanout")
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, xname, f"binding-{i}")
    ch.basic_publish(xname, "anything", b"1")
    ch.basic_publish(xname, "", b"2")
    for q in qs:
        assert drain(ch, q) == [b"1", b"2"]


def test_default_exchange_routes_by_queue_name(ch: BlockingChannel, qname: str) -> None:
    """The default exchange delivers to the queue named by the routing key, nothing else."""
    ch.queue_declare(qname, exclusive=True)
    ch.basic_publish("", qname, b"hit")
    ch.basic_publish("", qname.upper(), b"miss")
    ch.basic_publish("amq.direct", qname, b"not bound to amq.direct")
    assert drain(ch, qname) == [b"hit"]


@pytest.mark.parametrize("op", ["bind", "unbind"])
def test_bind_to_default_exchange_403(ch: BlockingChannel, qname: str, op: str) -> None:
    """queue.bind/unbind with the default exchange: 403 ACCESS_REFUSED."""
    ch.queue_declare(qname, exclusive=True)
    with channel_error(403):
        if op == "bind":
            ch.queue_bind(qname, "", "other")
        else:
            ch.queue_unbind(qname, "", qname)


HEADER_MESSAGES: dict[str, dict | None] = {
    "ab": {"a": 1, "b": "two"},
    "a": {"a": 1},
    "a_str": {"a": "1"},
    "xfoo": {"x-foo": "bar"},
    "xfoo_a": {"x-foo": "bar", "a": 1},
    "no_headers": None,
    "v_int": {"v": 1},
    "v_void": {"v": None},
    "t_true": {"t": True},
    "t_int": {"t": 1},
    "abc": {"a": 1, "b": "two", "c": 3},
}
ALL = list(HEADER_MESSAGES)
# binding arguments -> messages routed, recorded from RabbitMQ 3.10.8 (which already
# supports all-with-x / any-with-x).  Keys starting with "x-" are ignored by all/any;
# a void binding value matches any value; values compare with their type (1 != "1" != true).
HEADER_TABLE: list[tuple[str, dict, list[str]]] = [
    ("all", {"x-match": "all", "a": 1, "b": "two"}, ["ab", "abc"]),
    ("any", {"x-match": "any", "a": 1, "b": "two"}, ["ab", "a", "xfoo_a", "abc"]),
    ("default-all", {"a": 1, "b": "two"}, ["ab", "abc"]),
    ("all-empty", {"x-match": "all"}, ALL),
    ("any-empty", {"x-match": "any"}, []),
    ("no-args", {}, ALL),
    ("all-ignores-x", {"x-match": "all", "x-foo": "bar"}, ALL),
    ("all-with-x", {"x-match": "all-with-x", "x-foo": "bar", "a": 1}, ["xfoo_a"]),
    ("any-with-x", {"x-match": "any-with-x", "x-foo": "bar"}, ["xfoo", "xfoo_a"]),
    ("void", {"x-match": "all", "v": None}, ["v_int", "v_void"]),
    ("string", {"x-match": "all", "a": "1"}, ["a_str"]),
    ("bool", {"x-match": "all", "t": True}, ["t_true"]),
]


def test_headers_exchange_matching_table(ch: BlockingChannel, xname: str) -> None:
    """x-match all/any/all-with-x/any-with-x, default all, void values, typed comparison."""
    ch.exchange_declare(xname, "headers")
    queues = {}
    for name, args, _ in HEADER_TABLE:
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, xname, "routing key is ignored", arguments=args)
        queues[name] = q
    for name, headers in HEADER_MESSAGES.items():
        ch.basic_publish(xname, "whatever", name.encode(), pika.BasicProperties(headers=headers))
    got = {name: [b.decode() for b in drain(ch, q)] for name, q in queues.items()}
    assert got == {name: expected for name, _, expected in HEADER_TABLE}


def test_headers_invalid_x_match_406(ch: BlockingChannel, xname: str) -> None:
    """An unknown x-match value on queue.bind: 406 PRECONDITION_FAILED."""
    ch.exchange_declare(xname, "headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    with channel_error(406):
        ch.queue_bind(q, xname, "", arguments={"x-match": "bogus"})


def test_headers_unbind_by_arguments(ch: BlockingChannel, xname: str) -> None:
    """Headers bindings are identified by their arguments: unbinding one leaves the other."""
    ch.exchange_declare(xname, "headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, xname, "", arguments={"k": "one"})
    ch.queue_bind(q, xname, "", arguments={"k": "two"})
    ch.queue_unbind(q, xname, "", arguments={"k": "one"})
    for v in ("one", "two"):
        ch.basic_publish(xname, "", v.encode(), pika.BasicProperties(headers={"k": v}))
    assert drain(ch, q) == [b"two"]


def test_amq_match_is_a_headers_exchange(ch: BlockingChannel) -> None:
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.match", "", arguments={"x-match": "all", "queue": q})
    ch.basic_publish("amq.match", "", b"hdr", pika.BasicProperties(headers={"queue": q}))
    ch.basic_publish("amq.match", "", b"other", pika.BasicProperties(headers={"queue": q + "x"}))
    assert drain(ch, q) == [b"hdr"]
    ch.queue_unbind(q, "amq.match", "", arguments={"x-match": "all", "queue": q})


def test_topic_routing_aio_pika(broker_url: str, xname: str) -> None:
    """The same topic semantics through aio-pika's exchange/queue objects."""

    async def body() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(xname, aio_pika.ExchangeType.TOPIC)
            stars = await channel.declare_queue("", exclusive=True)
            hashes = await channel.declare_queue("", exclusive=True)
            await stars.bind(exchange, "logs.*.error")
            await hashes.bind(exchange, "logs.#")
            for key in ("logs.api.error", "logs.api.db.error", "logs", "other.api.error"):
                await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)

            async def bodies(q: aio_pika.abc.AbstractQueue) -> list[bytes]:
                out = []
                while (msg := await q.get(no_ack=True, fail=False)) is not None:
                    out.append(msg.body)
                return out

            assert await bodies(stars) == [b"logs.api.error"]
            assert await bodies(hashes) == [b"logs.api.error", b"logs.api.db.error", b"logs"]

    run(body)
