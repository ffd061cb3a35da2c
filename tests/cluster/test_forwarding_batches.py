"""The leader applies a link frame of a remote consumer's operations as one batch
(``LeaderService.on_consumer_ops``): a real vhost and classic queue, the link faked (the
batch is what one MESSAGES frame hands over)."""

from __future__ import annotations

from typing import Any

from smartbroker.broker.vhost import VirtualHost
from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.forwarding import LeaderService
from smartbroker.cluster.forwarding_wire import DELIVERIES, Kind, Op
from smartbroker.message import Message


class Link:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any, tuple]] = []

    def send(self, peer: str, spec: Any, item: tuple) -> bool:
        self.items.append((peer, spec, item))
        return True

    def writable(self, peer: str, spec: Any) -> bool:
        return True

    def deliveries(self) -> list[tuple[int, int, bool, bytes]]:
        """(sub, handle, redelivered, body) of the deliveries sent, and forget them."""
        found = [(i[1], i[2], bool(i[3]), bytes(i[7])) for _, spec, i in self.items
                 if spec is DELIVERIES and i[0] == Kind.DELIVER]
        self.items.clear()
        return found


def leader(messages: int) -> tuple[LeaderService, Link, Any]:
    link = Link()
    vhost = VirtualHost("/")
    vhost.declare_queue("q")
    q = vhost.queues["q"]
    for n in range(1, messages + 1):
        q.publish(Message.build("", "q", str(n).encode()))
    return LeaderService({"/": vhost}, link), link, q


def consume(service: LeaderService, sub: int, credit: int) -> None:
    reply = wire.decode(service.consume("n1", wire.encode(
        {"vhost": "/", "queue": "q", "sub": sub, "tag": f"c{sub}", "credit": credit})))
    assert reply["code"] == 0


def counting_dispatch(q: Any) -> list[int]:
    calls = [0]
    original = q.dispatch

    def dispatch() -> None:
        calls[0] += 1
        original()

    q.dispatch = dispatch
    return calls


def test_acks_and_credit_of_one_frame_dispatch_once() -> None:
    service, link, q = leader(10)
    consume(service, 1, 3)
    assert [d[3] for d in link.deliveries()] == [b"1", b"2", b"3"]
    calls = counting_dispatch(q)
    service.on_consumer_ops("n1", [(Op.ACK, 1, 1, 0), (Op.ACK, 1, 2, 0), (Op.ACK, 1, 3, 0),
                                   (Op.CREDIT, 1, 0, 3)])
    assert calls[0] == 1  # not once per ack and once per grant
    assert [d[3] for d in link.deliveries()] == [b"4", b"5", b"6"]
    assert q.unacked_count == 3 and q.message_count == 4


def test_a_requeue_before_credit_in_one_frame_is_delivered_next() -> None:
    service, link, q = leader(5)
    consume(service, 1, 2)
    assert [d[1] for d in link.deliveries()] == [1, 2]
    service.on_consumer_ops("n1", [(Op.ACK, 1, 1, 0), (Op.REQUEUE, 1, 2, 0),
                                   (Op.CREDIT, 1, 0, 2)])
    assert [(d[2], d[3]) for d in link.deliveries()] == [(True, b"2"), (False, b"3")]


def test_a_cancelled_consumer_settled_late_stays_out_of_the_ring() -> None:
    """Parked (out of credit), cancelled with its deliveries kept (its channel lives on),
    then its delivery requeued: the message goes to the other consumer, never back to the
    cancelled one."""
    service, link, q = leader(3)
    consume(service, 1, 1)
    assert [d[:2] for d in link.deliveries()] == [(1, 1)]
    service.on_consumer_ops("n1", [(Op.CANCEL, 1, 0, 0), (Op.REQUEUE, 1, 1, 0)])
    assert link.deliveries() == []  # nobody left to take it
    assert q.message_count == 3 and q.unacked_count == 0
    consume(service, 2, 1)
    assert [(d[0], d[3]) for d in link.deliveries()] == [(2, b"1")]
    assert ("n1", 1) not in service.consumers  # cancelled and nothing held: forgotten


def test_forwarded_messages_share_their_route() -> None:
    """Decoded once per distinct route (as a connection interns its publishes' routes),
    the raw property bytes and body kept as they came."""
    route = Message.build("amq.direct", "rk", b"").exchange_rk_ss
    a = wire.message(bytes(route), b"\x00\x00", b"a")
    b = wire.message(bytes(route), b"\x00\x00", b"b")
    assert a.route is b.route and a.route[:2] == ("amq.direct", "rk")
    assert (a.header_payload, a.body) == (b"\x00\x00", b"a")
