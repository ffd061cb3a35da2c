"""A declare on one node never creates a second queue (or exchange) over another node's
(cluster/etcd_view.py create-if-absent writes, server/held.py catch-up and retry).

The race: node 1 creates ``q`` (etcd has it once its declare-ok went out), node 2 is
asked for ``q`` a few ms later, before its watch applied node 1's record. Node 2 must
answer as a single node would (405 for another connection's exclusive queue, 406 for
inequivalent arguments or an exchange of another type), as RabbitMQ's Khepri refuses the
second creation. Many rounds,
each declare on node 2 sent right after node 1's -ok; then both sent at once from two
threads, where exactly one may win. Two real nodes, one real etcd, pika clients."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import running_cluster

ROUNDS = 60


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    with running_cluster(tmp_path_factory.mktemp("declare-race"), etcd.endpoint, ('r1', 'r2')) as procs:
        yield procs


def connect(proc: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(proc.url))


def outcome(conn: pika.BlockingConnection, declare: Callable[[Any], object]) -> int:
    """200 for declare-ok, else the channel error's code (on a fresh channel)."""
    ch = conn.channel()
    try:
        declare(ch)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code
    ch.close()
    return 200


def row(proc: BrokerProcess, name: str) -> dict[str, Any]:
    return proc.get_json(f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", timeout=10)


def exclusive(name: str) -> Callable[[Any], object]:
    return lambda ch: ch.queue_declare(name, exclusive=True)


def plain(name: str) -> Callable[[Any], object]:
    return lambda ch: ch.queue_declare(name)


def durable(name: str, ttl: int) -> Callable[[Any], object]:
    return lambda ch: ch.queue_declare(name, durable=True, arguments={"x-message-ttl": ttl})


def test_right_after_declare_ok_the_other_node_refuses(nodes: list[BrokerProcess]) -> None:
    first, second = connect(nodes[0]), connect(nodes[1])
    try:
        base = f"race-{free_port()}"
        for n in range(ROUNDS):
            name = f"{base}-x{n}"
            assert outcome(first, exclusive(name)) == 200
            assert outcome(second, plain(name)) == 405, f"round {n}: a second queue {name}"
            assert outcome(second, exclusive(name)) == 405
            assert row(nodes[1], name)["exclusive"] is True
            first.channel().queue_delete(name)
        for n in range(ROUNDS):
            name = f"{base}-d{n}"
            assert outcome(first, durable(name, 1000)) == 200
            assert outcome(second, durable(name, 2000)) == 406, f"round {n}: {name} replaced"
            assert outcome(second, durable(name, 1000)) == 200  # equivalent: declare-ok
            assert row(nodes[1], name)["arguments"] == {"x-message-ttl": 1000}
            second.channel().queue_delete(name)
        for n in range(ROUNDS):
            name = f"{base}-e{n}"
            assert outcome(first, lambda ch, x=name: ch.exchange_declare(x, "direct")) == 200
            assert outcome(second, lambda ch, x=name: ch.exchange_declare(x, "fanout")) == 406, \
                f"round {n}: exchange {name} replaced"
            assert outcome(second, lambda ch, x=name: ch.exchange_declare(x, "direct")) == 200
            second.channel().exchange_delete(name)
    finally:
        first.close()
        second.close()


def test_both_at_once_exactly_one_wins(nodes: list[BrokerProcess]) -> None:
    conns = [connect(nodes[0]), connect(nodes[1])]
    base = f"both-{free_port()}"
    try:
        with ThreadPoolExecutor(2) as pool:
            for n in range(ROUNDS):
                name = f"{base}-x{n}"
                start = threading.Barrier(2)
                declares = [exclusive(name), plain(name)]

                def run(i: int, declares: list[Any] = declares, start: Any = start) -> int:
                    start.wait(5)
                    return outcome(conns[i], declares[i])

                codes = list(pool.map(run, (0, 1)))
                assert sorted(codes) == [200, 405], f"round {n}: {codes} {[row(p, name) for p in nodes]}"
                rows = [row(p, name) for p in nodes]
                assert rows[0]["exclusive"] == rows[1]["exclusive"], f"round {n}: {rows}"
                winner = 0 if rows[0]["exclusive"] else 1
                conns[winner].channel().queue_delete(name)
            for n in range(ROUNDS):
                name = f"{base}-d{n}"
                start = threading.Barrier(2)
                declares = [durable(name, 1000), durable(name, 2000)]

                def run2(i: int, declares: list[Any] = declares, start: Any = start) -> int:
                    start.wait(5)
                    return outcome(conns[i], declares[i])

                codes = list(pool.map(run2, (0, 1)))
                assert sorted(codes) == [200, 406], f"round {n}: {codes}"
                ttl = 1000 if codes[0] == 200 else 2000
                for p in nodes:
                    assert row(p, name)["arguments"] == {"x-message-ttl": ttl}, f"round {n}"
                conns[0].channel().queue_delete(name)
            for n in range(ROUNDS):
                name = f"{base}-e{n}"
                start = threading.Barrier(2)
                kinds = ["direct", "fanout"]

                def run3(i: int, kinds: list[str] = kinds, start: Any = start,
                         name: str = name) -> int:
                    start.wait(5)
                    return outcome(conns[i], lambda ch: ch.exchange_declare(name, kinds[i]))

                codes = list(pool.map(run3, (0, 1)))
                assert sorted(codes) == [200, 406], f"round {n}: {codes}"
                kind = kinds[codes.index(200)]
                for p in nodes:
                    assert p.get_json(f"/api/exchanges/%2F/{name}", timeout=10)["type"] == kind
                conns[0].channel().exchange_delete(name)
    finally:
        for c in conns:
            c.close()
