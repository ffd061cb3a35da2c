"""What queues led by another node send over the cluster link: channels, calls, payloads.

One-way channels (``link_codec.ChannelSpec``: fixed fields, then raw byte strings; the
link batches them, a thousand publishes are a few frames and one write):

- ``PUBLISH`` (any node -> leader): ``seq, vhost, queue, exchange_rk, properties, body``:
  a message routed to a queue the receiver leads, the AMQP content as the client sent it;
- ``CONFIRM`` (leader -> sender): ``upto, nacked``: every seq up to ``upto`` is settled
  (fsynced if it had to be); ``nacked`` a seq the queue refused (reject-publish);
- ``CONSUMER_OPS`` (consumer's node -> leader): ``op, sub, handle, count``: credit, acks,
  requeues, discards and cancels of one remote consumer, in the order the client made
  them (one channel, so a requeue is never overtaken by the cancel after it);
- ``DELIVERIES`` (leader -> consumer's node): ``kind, sub, handle, redelivered, count,
  exchange_rk, properties, body``: a delivery, or the leader cancelled the consumer.

Calls (request/response; the reply code is the AMQP reply code of a refusal, its text
the payload) carry an AMQP field table (``protocol/fields``), so arguments keep their
AMQP types: ``queue.get``, ``queue.purge``, ``queue.delete``, ``queue.stats``,
``basic.consume``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from smartbroker.cluster.link_codec import ChannelSpec
from smartbroker.message import Message
from smartbroker.protocol.codec import property_flags
from smartbroker.protocol.fields import Malformed, decode_table, encode_table

PUBLISH = ChannelSpec(20, "publish", "Q", 5)
CONFIRM = ChannelSpec(21, "confirm", "QB")
CONSUMER_OPS = ChannelSpec(22, "consumer-ops", "BQQI")
DELIVERIES = ChannelSpec(23, "deliveries", "BQQBI", 3)
CHANNELS = (PUBLISH, CONFIRM, CONSUMER_OPS, DELIVERIES)

GET = "queue.get"
PURGE = "queue.purge"
DELETE = "queue.delete"
STATS = "queue.stats"
STATS_ALL = "queue.stats_all"  # every queue the leader leads: the counts lists show
CONSUME = "basic.consume"


class Op(enum.IntEnum):
    """``CONSUMER_OPS``: what the consumer's node tells the leader."""

    CREDIT = 1  # ``count`` more deliveries may be sent
    ACK = 2
    REQUEUE = 3
    DISCARD = 4
    CANCEL = 5  # basic.cancel, channel closed, connection gone
    GET_ACK = 6  # settlements of a basic.get delivery (sub 0)
    GET_REQUEUE = 7
    GET_DISCARD = 8
    DRAIN = 9  # give back the credit not used yet (answered by ``Kind.DRAINED``)


class Kind(enum.IntEnum):
    """``DELIVERIES``: what the leader tells the consumer's node."""

    DELIVER = 1
    CANCELLED = 2  # the queue was deleted: basic.cancel to the client
    DRAINED = 3  # ``Op.DRAIN``'s answer: ``count`` credit given back (after every delivery)


def encode(payload: Mapping[str, Any]) -> bytes:
    return encode_table(payload)


def decode(data: bytes) -> dict[str, Any]:
    """A call's payload; ``ValueError`` for garbage (the caller answers an error)."""
    try:
        table, end = decode_table(data)
    except (Malformed, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed payload: {exc}") from None
    if end != len(data):
        raise ValueError("malformed payload: trailing bytes")
    return table


def split_route(exchange_rk: bytes) -> tuple[str, str]:
    """(exchange, routing key) from two AMQP short strings, as ``Message.route`` keeps them."""
    n = exchange_rk[0]
    exchange = exchange_rk[1:1 + n].decode()
    m = exchange_rk[1 + n]
    routing_key = exchange_rk[2 + n:2 + n + m].decode()
    return exchange, routing_key


ROUTES_KEPT = 4096  # routes remembered (then forgotten all at once: a bound, not an LRU)
_routes: dict[bytes, tuple[str, str, bytes]] = {}


def message(exchange_rk: bytes, properties: bytes, body: bytes) -> Message:
    """The message as it arrived at the first node (its raw content, not re-encoded).
    Its route is decoded once per distinct route and shared, as a connection interns
    the routes of its publishes: per message only the flags are read."""
    route = _routes.get(exchange_rk)
    if route is None:
        exchange, routing_key = split_route(exchange_rk)
        if len(_routes) >= ROUTES_KEPT:
            _routes.clear()
        route = _routes[exchange_rk] = (exchange, routing_key, exchange_rk)
    return Message.routed(route, properties, body, property_flags(properties))
