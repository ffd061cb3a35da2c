"""``serve --workers 2``: a connection moves to the worker that leads its queue.

Real processes on free loopback ports (``serve --workers 2`` as test_workers.py starts
it), real clients (pika, aio-pika). A connection that lands on the worker not leading its
queue is handed to the other one at its first publish or consume (its socket passed over
a Unix socket, server/handoff.py): asserted from outside, by the node its
/api/connections row names (each client names its connection) and by the workers'
handover counters in /api/nodes/{name}, and the client sees the
same broker: confirms, delivery tags going on, prefetch, redelivered flags, heartbeats;
no message lost or duplicated. A connection already committed to a local queue stays.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from collections.abc import Iterator

import aio_pika
import pika
import pytest

from smartbroker.cluster.etcd_process import etcd_binary
from tests.cluster.workers_process import AUTH, DIRECT, Workers

_names = itertools.count()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    running = Workers(tmp_path_factory.mktemp("handoff")).start()
    try:
        yield running
    finally:
        running.stop()
        print(running.log()[-6000:])  # shown when a test failed: which moves happened
        assert "Traceback" not in running.log(), running.log()


def where(workers: Workers, name: str) -> str | None:
    """The worker whose /api/connections lists the connection named ``name``."""
    for node, port in workers.apis().items():
        listed = workers.get("/api/connections", port)
        assert isinstance(listed, list)
        if any((c.get("client_properties") or {}).get("connection_name") == name
               and c.get("node") == node  # every worker lists the cluster's clients
               for c in listed):
            return node
    return None


def pika_on(workers: Workers, node: str, heartbeat: int = 60, user: str = "guest:guest") \
        -> tuple[pika.BlockingConnection, str]:
    """A pika connection that landed on ``node`` (SO_REUSEPORT picks at random: others
    are closed, or were refused), and its name."""
    for _ in range(60):
        name = f"handoff-{next(_names)}"
        params = pika.URLParameters(workers.url.replace("guest:guest", user))
        params.client_properties = {"connection_name": name}
        params.heartbeat = heartbeat
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPConnectionError:
            continue  # a connection limit on the worker it landed on
        if where(workers, name) == node:
            return conn, name
        conn.close()
    raise AssertionError(f"no connection landed on {node} in 60 tries")


def nodes(workers: Workers) -> tuple[str, str]:
    w0, w1 = sorted(workers.apis())
    assert w0.endswith("-w0") and w1.endswith("-w1")
    return w0, w1


def declare_on(workers: Workers, node: str, queue: str) -> None:
    """A durable queue led by ``node`` (declared there, client-local), known to both."""
    conn, _ = pika_on(workers, node)
    conn.channel().queue_declare(queue, durable=True,
                                 arguments={"x-queue-leader-locator": "client-local"})
    conn.close()
    deadline = time.monotonic() + 10
    while True:  # every worker's API lists it with its leader once its watch applied it
        seen = [{q["name"]: q.get("node") for q in workers.get("/api/queues", port)}  # type: ignore[union-attr]
                .get(queue) for port in workers.apis().values()]
        if seen == [node, node]:
            return
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)


def queue_counts(workers: Workers, queue: str) -> tuple[int, int]:
    info = workers.get(f"/api/queues/%2F/{queue}")
    assert isinstance(info, dict)
    return info.get("messages_ready", 0), info.get("messages_unacknowledged", 0)


def handovers(workers: Workers) -> dict[str, tuple[int, int, int]]:
    """Each worker's (handed over, taken over, failed), from its own /api/nodes/{name}."""
    out = {}
    for node, port in workers.apis().items():
        info = workers.get(f"/api/nodes/{node}", port)
        assert isinstance(info, dict)
        out[node] = (info["connections_handed_over"], info["connections_taken_over"],
                     info["connection_handovers_failed"])
    return out


def test_publisher_with_confirms_moves_to_the_leader(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w1, "ho-pub")
    before = handovers(workers)
    conn, name = pika_on(workers, w0, heartbeat=1)
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(200):  # each publish waits for its confirm: tags must line up
        ch.basic_publish("", "ho-pub", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
        if i == 0:
            assert where(workers, name) == w1  # moved at its first publish
    # idle for 4 heartbeat intervals: the new worker must send and expect heartbeats
    conn.process_data_events(time_limit=4)
    ch.basic_publish("", "ho-pub", b"after", pika.BasicProperties(delivery_mode=2))
    assert where(workers, name) == w1
    assert conn.is_open
    conn.close()
    after = handovers(workers)
    assert after[w0][0] == before[w0][0] + 1 and after[w1][1] == before[w1][1] + 1
    assert after[w0][2] == before[w0][2]
    reader, _ = pika_on(workers, w1)
    sub = reader.channel()
    got = []
    while True:
        method, _props, body = sub.basic_get("ho-pub", auto_ack=True)
        if method is None:
            break
        got.append(body.decode())
    assert got == [f"m{i}" for i in range(200)] + ["after"]  # none lost, none twice
    sub.queue_delete("ho-pub")
    reader.close()


def test_consumer_moves_with_its_channel_state(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w1, "ho-con")
    pub, _ = pika_on(workers, w1)
    pch = pub.channel()
    pch.confirm_delivery()
    for i in range(20):
        pch.basic_publish("", "ho-con", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn, name = pika_on(workers, w0)
    ch = conn.channel()
    # before the move, through the cluster link: two gets acked, one rejected (requeued)
    for _ in range(2):
        method, _props, _body = ch.basic_get("ho-con")
        ch.basic_ack(method.delivery_tag)
    method, _props, body = ch.basic_get("ho-con")
    assert method.delivery_tag == 3
    ch.basic_reject(method.delivery_tag, requeue=True)
    assert where(workers, name) == w0
    ch.basic_qos(prefetch_count=5)
    got: list[tuple[int, bool, str]] = []
    ch.basic_consume("ho-con", lambda c, m, p, b: got.append(
        (m.delivery_tag, m.redelivered, b.decode())))
    conn.process_data_events(time_limit=0)
    assert where(workers, name) == w1  # moved at basic.consume, before handling it
    deadline = time.monotonic() + 10
    while len(got) < 5:
        conn.process_data_events(time_limit=0.05)
        assert time.monotonic() < deadline, got
    # the prefetch travelled: 5 unacked on the leader and the rest ready, no more sent
    while queue_counts(workers, "ho-con") != (13, 5):
        assert time.monotonic() < deadline, queue_counts(workers, "ho-con")
        time.sleep(0.02)
    assert len(got) == 5
    # the tags go on from the gets (4 on), and the rejected message comes back redelivered
    assert [t for t, _, _ in got] == [4, 5, 6, 7, 8]
    assert got[0][1:] == (True, body.decode())
    assert all(not redelivered for _, redelivered, _ in got[1:])
    while len(got) < 18:
        ch.basic_ack(got[-1][0], multiple=True)
        conn.process_data_events(time_limit=0.05)
        assert time.monotonic() < deadline, len(got)
    ch.basic_ack(got[-1][0], multiple=True)
    bodies = [b for _, _, b in got]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(2, 20))  # each exactly once
    while queue_counts(workers, "ho-con") != (0, 0):
        assert time.monotonic() < deadline, queue_counts(workers, "ho-con")
        time.sleep(0.02)
    ch.queue_delete("ho-con")
    conn.close()
    pub.close()


def test_committed_to_a_local_queue_it_stays(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w0, "ho-local")
    declare_on(workers, w1, "ho-remote")
    conn, name = pika_on(workers, w0)
    ch = conn.channel()
    ch.basic_consume("ho-local", lambda *a: None, auto_ack=True)  # decided: stays on w0
    pch = conn.channel()
    pch.confirm_delivery()
    for i in range(50):
        pch.basic_publish("", "ho-remote", f"r{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert where(workers, name) == w0  # forwarded, as before
    deadline = time.monotonic() + 10
    while queue_counts(workers, "ho-remote")[0] != 50:
        assert time.monotonic() < deadline, queue_counts(workers, "ho-remote")
        time.sleep(0.02)
    pch.queue_delete("ho-remote")
    pch.queue_delete("ho-local")
    conn.close()


def test_aio_pika_publisher_and_consumer_move(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w0, "ho-aio")

    async def on(node: str) -> tuple[aio_pika.abc.AbstractConnection, str]:
        for _ in range(60):
            name = f"handoff-aio-{next(_names)}"
            conn = await aio_pika.connect(workers.url, client_properties={
                "connection_name": name})
            if await asyncio.to_thread(where, workers, name) == node:
                return conn, name
            await conn.close()
        raise AssertionError(f"no connection landed on {node}")

    async def run() -> None:
        consumer, cname = await on(w1)
        publisher, pname = await on(w1)
        cch = await consumer.channel()
        await cch.set_qos(prefetch_count=50)
        queue = await cch.get_queue("ho-aio", ensure=False)
        got: list[str] = []
        done = asyncio.Event()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body.decode())
            await message.ack()
            if len(got) == 1000:
                done.set()

        await queue.consume(take)
        assert await asyncio.to_thread(where, workers, cname) == w0
        pch = await publisher.channel(publisher_confirms=True)
        # many publishes in flight at once: some arrive while the connection moves
        await asyncio.gather(*(pch.default_exchange.publish(
            aio_pika.Message(f"a{i}".encode(), delivery_mode=2), "ho-aio")
            for i in range(1000)))
        assert await asyncio.to_thread(where, workers, pname) == w0
        await asyncio.wait_for(done.wait(), 20)
        assert sorted(got) == sorted(f"a{i}" for i in range(1000))  # each exactly once
        await pch.queue_delete("ho-aio")
        await publisher.close()
        await consumer.close()

    asyncio.run(run())


def test_unacked_delivery_or_exclusive_queue_keeps_it_here(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w1, "ho-busy")
    pub, _ = pika_on(workers, w1)
    pch = pub.channel()
    pch.confirm_delivery()
    for i in range(6):
        pch.basic_publish("", "ho-busy", f"b{i}".encode(), pika.BasicProperties(delivery_mode=2))
    # a basic.get not acked yet, or an exclusive queue of its own: moving would lose them
    unacked, uname = pika_on(workers, w0)
    uch = unacked.channel()
    held, _props, _body = uch.basic_get("ho-busy")
    assert held is not None
    exclusive, ename = pika_on(workers, w0)
    ech = exclusive.channel()
    ech.queue_declare("", exclusive=True)
    got = []
    for conn, ch in ((unacked, uch), (exclusive, ech)):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume("ho-busy", lambda c, m, p, b: got.append(b.decode()))
        deadline = time.monotonic() + 10
        while not got:
            conn.process_data_events(time_limit=0.05)
            assert time.monotonic() < deadline
        got.clear()
    assert where(workers, uname) == w0 and where(workers, ename) == w0  # stayed, forwarded
    uch.basic_ack(held.delivery_tag)
    unacked.close()
    exclusive.close()  # its unacked delivery goes back to the queue
    deadline = time.monotonic() + 10
    while queue_counts(workers, "ho-busy") != (5, 0):
        assert time.monotonic() < deadline, queue_counts(workers, "ho-busy")
        time.sleep(0.02)
    pch.queue_delete("ho-busy")
    pub.close()


def put(workers: Workers, path: str, body: object) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{workers.http}{path}", method="PUT",
                                 data=json.dumps(body).encode(),
                                 headers={**AUTH, "Content-Type": "application/json"})
    with DIRECT.open(req, timeout=5):
        pass


def test_a_target_that_refuses_leaves_it_here_forwarding(workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w1, "ho-refused")
    put(workers, "/api/users/ho-limited", {"password": "pw", "tags": ""})
    put(workers, "/api/permissions/%2F/ho-limited", {"configure": ".*", "write": ".*",
                                                    "read": ".*"})
    put(workers, "/api/user-limits/ho-limited/max-connections", {"value": 1})
    deadline = time.monotonic() + 10
    while not all(workers.get("/api/user-limits/ho-limited", port)
                  for port in workers.apis().values()):  # both workers applied the limit
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # the user's one connection on w1: w1 refuses to take a second one
    holder, _ = pika_on(workers, w1, user="ho-limited:pw")
    mover, name = pika_on(workers, w0, user="ho-limited:pw")
    before = handovers(workers)
    ch = mover.channel()
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "ho-refused", f"f{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert where(workers, name) == w0  # refused by w1: it stayed and forwarded
    after = handovers(workers)
    assert after[w0][2] == before[w0][2] + 1 and after[w0][0] == before[w0][0]
    while queue_counts(workers, "ho-refused") != (20, 0):  # every publish once
        assert time.monotonic() < deadline, queue_counts(workers, "ho-refused")
        time.sleep(0.02)
    mover.close()
    holder.close()
    reader, _ = pika_on(workers, w1)
    rch = reader.channel()
    got = []
    while (found := rch.basic_get("ho-refused", auto_ack=True))[0] is not None:
        got.append(found[2].decode())
    assert got == [f"f{i}" for i in range(20)]
    rch.queue_delete("ho-refused")
    reader.close()


def test_through_an_exchange_it_moves_only_when_one_sibling_leads_every_queue(
        workers: Workers) -> None:
    w0, w1 = nodes(workers)
    declare_on(workers, w1, "ho-x-far")
    declare_on(workers, w0, "ho-x-near")
    setup, _ = pika_on(workers, w1)
    sch = setup.channel()
    sch.exchange_declare("ho-x-direct", "direct", durable=True)
    sch.exchange_declare("ho-x-fanout", "fanout", durable=True)
    sch.queue_bind("ho-x-far", "ho-x-direct", "far")
    sch.queue_bind("ho-x-far", "ho-x-fanout")
    sch.queue_bind("ho-x-near", "ho-x-fanout")
    deadline = time.monotonic() + 10
    while not all(len(workers.get("/api/exchanges/%2F/ho-x-fanout/bindings/source", port)) == 2  # type: ignore[arg-type]
                  for port in workers.apis().values()):  # both workers applied the bindings
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for exchange, key, expected in (("ho-x-direct", "far", w1), ("ho-x-fanout", "", w0)):
        conn, name = pika_on(workers, w0)
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish(exchange, key, f"{exchange}{i}".encode(),
                             pika.BasicProperties(delivery_mode=2))
        assert where(workers, name) == expected, exchange  # fanout: two leaders, it stays
        conn.close()
    while (queue_counts(workers, "ho-x-far")[0], queue_counts(workers, "ho-x-near")[0]) != (20, 10):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for q in ("ho-x-far", "ho-x-near"):
        sch.queue_delete(q)
    for x in ("ho-x-direct", "ho-x-fanout"):
        sch.exchange_delete(x)
    setup.close()
