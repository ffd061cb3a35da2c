"""Exclusive queues are cluster-wide, as in RabbitMQ (cluster/exclusive_queues.py): a
connection on another node gets 405 RESOURCE_LOCKED for every use of one, its name is
taken, publishes from any node reach it (RPC replies), and it goes with its connection
or its node. Direct reply-to reaches a channel of another node (cluster/reply_to.py).
Two real nodes, one real etcd, pika clients over real sockets."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import poll, running_cluster

LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost "
          "'/'. It could be originally declared on another connection or the exclusive "
          "property value does not match that of the original declaration.")


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    with running_cluster(tmp_path_factory.mktemp("exclusive"), etcd.endpoint, ('x1', 'x2')) as procs:
        yield procs


def connect(proc: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(proc.url))


def refused(conn: pika.BlockingConnection, use: Callable[[Any], object]) -> tuple[int, str]:
    """(code, text) of the channel error ``use`` gets on a fresh channel of ``conn``."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        use(ch)
    return caught.value.reply_code, caught.value.reply_text


def known(proc: BrokerProcess, name: str) -> dict[str, Any] | None:
    """The queue's row in this node's /api/queues/%2F/{name}, None when unknown."""
    try:
        return proc.get_json(f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", timeout=10)
    except Exception as exc:  # urllib's HTTPError 404
        if getattr(exc, "code", None) == 404:
            return None
        raise


def uses(name: str) -> dict[str, Callable[[Any], object]]:
    return {
        "declare": lambda ch: ch.queue_declare(name, exclusive=True),
        "declare non-exclusive": lambda ch: ch.queue_declare(name),
        "passive declare": lambda ch: ch.queue_declare(name, passive=True),
        "consume": lambda ch: ch.basic_consume(name, lambda *a: None),
        "get": lambda ch: ch.basic_get(name),
        "purge": lambda ch: ch.queue_purge(name),
        "delete": lambda ch: ch.queue_delete(name),
        "bind": lambda ch: ch.queue_bind(name, "amq.direct", routing_key="k"),
    }


def test_locked_on_the_other_node_and_reached_by_its_publishes(nodes: list[BrokerProcess]) -> None:
    owner, other = connect(nodes[0]), connect(nodes[1])
    try:
        ch = owner.channel()
        name = f"rpc-reply-{free_port()}"  # an RPC client's reply queue
        ch.queue_declare(name, exclusive=True)
        ch.queue_bind(name, "amq.direct", routing_key=f"rk-{name}")
        for what, use in uses(name).items():  # right after declare-ok: no 404, a 405
            assert refused(other, use) == (405, LOCKED.format(q=name)), what
        # publishes from the other node reach it, by its name and through a binding
        pub = other.channel()
        pub.confirm_delivery()
        pub.basic_publish("", name, b"reply", pika.BasicProperties(correlation_id="c1"))
        pub.basic_publish("amq.direct", f"rk-{name}", b"bound")
        got = []
        for _method, props, body in ch.consume(name, inactivity_timeout=10):
            assert body is not None, f"only {got} arrived"
            got.append((body, props.correlation_id))
            if len(got) == 2:
                break
        ch.cancel()
        assert got == [(b"reply", "c1"), (b"bound", None)]
        row = poll(lambda: known(nodes[1], name), "the queue in the other node's API")
        assert row["exclusive"] is True and row["node"] == "x1"
        assert row["owner_pid_details"]["name"].startswith("127.0.0.1:")
    finally:
        owner.close()
    # gone with its connection, on the other node too by the time close-ok arrived
    assert refused(other, uses(name)["passive declare"])[0] == 404
    ch = other.channel()
    assert ch.queue_declare(name, exclusive=True).method.queue == name
    other.close()


def test_fanout_to_an_exclusive_queue_and_reply_through_the_other_node(
        nodes: list[BrokerProcess]) -> None:
    """What celery's remote control (kombu's pidbox) does: the worker's exclusive,
    auto-delete, x-expires queue bound to a fanout exchange; a client on another node
    declares its reply queue (auto-delete, x-expires) bound to a direct exchange,
    publishes the command to the fanout, and the worker replies through the direct
    exchange. It failed whenever the client landed on the other worker: the exclusive
    queue and its binding were known to their node alone."""
    tag = free_port()
    worker, client = connect(nodes[0]), connect(nodes[1])
    try:
        w = worker.channel()
        w.exchange_declare(f"pidbox-{tag}", "fanout")
        box = f"w-{tag}.celery.pidbox"
        w.queue_declare(box, exclusive=True, auto_delete=True, arguments={"x-expires": 10000})
        w.queue_bind(box, f"pidbox-{tag}")
        c = client.channel()
        c.exchange_declare(f"reply-{tag}", "direct")
        reply = f"{tag}.reply.celery.pidbox"
        c.queue_declare(reply, auto_delete=True, arguments={"x-expires": 10000,
                                                            "x-message-ttl": 10000})
        c.queue_bind(reply, f"reply-{tag}", routing_key=str(tag))
        c.basic_publish(f"pidbox-{tag}", "", b'{"method": "ping"}',
                        pika.BasicProperties(reply_to=str(tag), correlation_id="t1"))
        method, props, body = next(w.consume(box, inactivity_timeout=10))
        assert body == b'{"method": "ping"}' and props.reply_to == str(tag)
        w.basic_ack(method.delivery_tag)
        w.basic_publish(f"reply-{tag}", props.reply_to, b'{"ok": "pong"}',
                        pika.BasicProperties(correlation_id=props.correlation_id))
        _method, props, body = next(c.consume(reply, inactivity_timeout=10))
        assert (body, props.correlation_id) == (b'{"ok": "pong"}', "t1")
    finally:
        worker.close()
        client.close()


def test_direct_reply_to_a_channel_of_the_other_node(nodes: list[BrokerProcess]) -> None:
    """RabbitMQ's direct reply-to in a cluster: the server replies on its node to the
    client's channel on the other (the reply-to names that node)."""
    server, client = connect(nodes[0]), connect(nodes[1])
    try:
        s = server.channel()
        requests = f"rpc-{free_port()}"
        s.queue_declare(requests, exclusive=True)
        c = client.channel()
        replies: list[tuple[bytes, str]] = []
        c.basic_consume("amq.rabbitmq.reply-to",
                        lambda _c, _m, p, b: replies.append((b, p.correlation_id)),
                        auto_ack=True)
        c.basic_publish("", requests, b"2+2", pika.BasicProperties(
            reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
        _method, props, body = next(s.consume(requests, auto_ack=True, inactivity_timeout=10))
        assert body == b"2+2" and props.reply_to.endswith(".x2")
        s.cancel()
        s.basic_publish("", props.reply_to, b"4", pika.BasicProperties(correlation_id="c1"))
        poll(lambda: client.process_data_events(0.05) or replies, "the reply on x2")
        assert replies == [(b"4", "c1")]
        # a reply to a channel gone, or to a token naming no node, is dropped
        c.close()
        s.confirm_delivery()
        s.basic_publish("", props.reply_to, b"late")
        s.basic_publish("", "amq.rabbitmq.reply-to.nonode", b"lost")
    finally:
        server.close()
        client.close()


def test_gone_with_its_node_and_not_left_by_a_restart(nodes: list[BrokerProcess]) -> None:
    first = connect(nodes[0])
    name = first.channel().queue_declare("", exclusive=True).method.queue  # server-named
    poll(lambda: known(nodes[1], name), "the queue known on x2")
    # restarted right after a kill -9 (its lease taken over): the queue is not left
    # locked on the other node, its connection being gone
    nodes[0].kill()
    nodes[0].start()
    poll(lambda: known(nodes[1], name) is None, "the dead connection's queue gone on x2")
    # a node started later knows the exclusive queues already declared elsewhere
    owner = connect(nodes[0])
    late = f"late-{free_port()}"
    owner.channel().queue_declare(late, exclusive=True)
    poll(lambda: known(nodes[1], late), "the queue known on x2")
    nodes[1].stop()
    nodes[1].start()
    other = connect(nodes[1])
    try:
        assert refused(other, uses(late)["consume"]) == (405, LOCKED.format(q=late))
        # kill -9 of the owner's node: the queue goes when its lease expires
        nodes[0].kill()
        poll(lambda: known(nodes[1], late) is None, "the dead node's queue gone on x2")
        other.channel().queue_declare(late, exclusive=True)
    finally:
        other.close()
        nodes[0].start()
    assert json.dumps(known(nodes[0], late)) == "null"  # never restored on its node
