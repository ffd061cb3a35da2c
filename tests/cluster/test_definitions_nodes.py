"""Definitions in etcd with real nodes: a declare's -ok comes after etcd holds it, what
one node declares the other knows, and /api/definitions exports and imports the whole
cluster's definitions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from smartbroker.cluster.definitions_keys import key
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.conftest import private_etcd
from tests.cluster.http_api import call
from tests.cluster.node_group import poll, start_all, stop_all


def api(proc: BrokerProcess, path: str, body: Any = None, method: str = "GET") -> Any:
    """The JSON of a request that must succeed."""
    status, data = call(proc, path, body, method, timeout=10)
    assert status < 400, f"{method} {path}: {status} {data!r}"
    return data


@pytest.fixture(scope="module")
def own_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """An etcd of this module's own: one test freezes it (SIGSTOP)."""
    with private_etcd(tmp_path_factory.mktemp("etcd")) as proc:
        yield proc


@pytest.fixture(scope="module")
def cluster(own_etcd: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, list[BrokerProcess]]]:
    tmp = tmp_path_factory.mktemp("definitions")
    name = f"d-{free_port()}"
    procs = [BrokerProcess(tmp / n / "data", log_path=tmp / f"{n}.log",
                           etcd=own_etcd.endpoint, node_name=n, cluster_name=name)
             for n in ("d1", "d2")]
    try:
        start_all(procs)
        yield name, procs
    finally:
        stop_all(procs)


def etcd_has(etcd: EtcdProcess, cluster: str, k: bytes) -> bool:
    async def get() -> bool:
        async with EtcdClient(etcd.endpoint, cluster) as client:
            return await client.get(k) is not None
    return asyncio.run(get())


def test_declare_ok_means_etcd_holds_it_and_the_other_node_knows(
        own_etcd: EtcdProcess, cluster: tuple[str, list[BrokerProcess]]) -> None:
    name, (d1, d2) = cluster
    conn = pika.BlockingConnection(pika.URLParameters(d1.url))
    try:
        ch = conn.channel()
        ch.exchange_declare("defs.x", "topic", durable=True)
        ch.queue_declare("defs/q", durable=True, arguments={"x-max-length": 5})
        ch.queue_bind("defs/q", "defs.x", "a.#")
        # each -ok came after etcd's commit: the keys are there now, no waiting
        assert etcd_has(own_etcd, name, key("exchanges", "/", "defs.x"))
        assert etcd_has(own_etcd, name, key("queues", "/", "defs/q"))
    finally:
        conn.close()
    poll(lambda: any(b["source"] == "defs.x" and b["destination"] == "defs/q"
                     for b in api(d2, "/api/bindings/%2F")), "the binding on d2")
    exchange = api(d2, "/api/exchanges/%2F/defs.x")
    assert exchange["type"] == "topic" and exchange["durable"]


def test_definitions_export_and_import_cover_the_cluster(
        cluster: tuple[str, list[BrokerProcess]]) -> None:
    _, (d1, d2) = cluster
    api(d1, "/api/definitions", {
        "vhosts": [{"name": "imported"}],
        "users": [{"name": "alice", "password_hash": "", "tags": "management"}],
        "permissions": [{"user": "alice", "vhost": "imported", "configure": ".*",
                         "write": ".*", "read": ".*"}],
        "queues": [{"name": "iq", "vhost": "imported", "durable": True,
                    "auto_delete": False, "arguments": {"x-message-ttl": 1000}}],
        "exchanges": [{"name": "ix", "vhost": "imported", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": "ix", "vhost": "imported", "destination": "iq",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
        "policies": [{"vhost": "imported", "name": "p", "pattern": "^iq$",
                      "definition": {"max-length": 7}, "priority": 1, "apply-to": "queues"}],
    }, method="POST")

    def exported() -> dict[str, Any]:
        return api(d2, "/api/definitions")

    poll(lambda: any(b["source"] == "ix" for b in exported()["bindings"]),
         "the imported definitions exported by the other node")
    defs = exported()
    assert {"name": "imported"} in [{"name": v["name"]} for v in defs["vhosts"]]
    assert any(u["name"] == "alice" for u in defs["users"])
    assert any(p["user"] == "alice" and p["vhost"] == "imported" for p in defs["permissions"])
    assert [q["arguments"] for q in defs["queues"] if q["name"] == "iq"] == [
        {"x-message-ttl": 1000}]
    assert any(p["name"] == "p" and p["definition"] == {"max-length": 7}
               for p in defs["policies"])


def test_declare_ok_waits_while_etcd_is_frozen(own_etcd: EtcdProcess,
                                              cluster: tuple[str, list[BrokerProcess]]) -> None:
    """No -ok while etcd cannot commit (SIGSTOP); it comes once etcd is back."""
    name, (d1, _) = cluster
    answered = threading.Event()
    errors: list[BaseException] = []

    def declare() -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(d1.url))
            try:
                conn.channel().queue_declare("frozen.q", durable=True)
                answered.set()
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            answered.set()

    assert own_etcd.proc is not None
    os.kill(own_etcd.proc.pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=declare)
        worker.start()
        assert not answered.wait(1.0), "declare-ok came while etcd was frozen"
    finally:
        os.kill(own_etcd.proc.pid, signal.SIGCONT)
    worker.join(20)
    assert answered.is_set() and not errors, errors
    assert etcd_has(own_etcd, name, key("queues", "/", "frozen.q"))


def test_users_permissions_and_deletes_reach_the_other_node(
        cluster: tuple[str, list[BrokerProcess]]) -> None:
    _, (d1, d2) = cluster
    api(d1, "/api/users/bob", {"password": "secret", "tags": ""}, method="PUT")
    api(d1, "/api/permissions/%2F/bob", {"configure": ".*", "write": ".*", "read": ".*"},
        method="PUT")
    poll(lambda: any(p["user"] == "bob" for p in api(d2, "/api/permissions")),
         "bob's permission on d2")
    params = pika.URLParameters(f"amqp://bob:secret@{d2.host}:{d2.port}/")
    conn = pika.BlockingConnection(params)  # bob's password hash came through etcd
    try:
        conn.channel().queue_declare("bob.q", durable=True)
    finally:
        conn.close()
    poll(lambda: any(q["name"] == "bob.q" for q in api(d1, "/api/queues/%2F")), "bob.q on d1")
    api(d2, "/api/queues/%2F/bob.q", method="DELETE")
    poll(lambda: not any(q["name"] == "bob.q" for q in api(d1, "/api/queues/%2F")),
         "bob.q gone from d1")
    api(d2, "/api/users/bob", method="DELETE")
    poll(lambda: all(u["name"] != "bob" for u in api(d1, "/api/users")), "bob gone from d1")


def test_cli_export_then_import_restores_the_cluster(
        cluster: tuple[str, list[BrokerProcess]], tmp_path: Path) -> None:
    """`smartbroker definitions export` on one node, a vhost deleted, `import` on the same
    node: the other node has the vhost, its queue and binding back."""
    _, (d1, d2) = cluster
    api(d1, "/api/vhosts/cli-v", {}, method="PUT")
    api(d1, "/api/permissions/cli-v/guest", {"configure": ".*", "write": ".*", "read": ".*"},
        method="PUT")
    api(d1, "/api/queues/cli-v/cq", {"durable": True, "arguments": {"x-max-length": 9}},
        method="PUT")
    api(d1, "/api/bindings/cli-v/e/amq.direct/q/cq", {"routing_key": "rk"}, method="POST")
    poll(lambda: any(b["destination"] == "cq" for b in api(d2, "/api/bindings/cli-v")),
         "the binding on d2")
    base = f"http://guest:guest@{d2.host}:{d2.management_port}"
    path = tmp_path / "defs.json"

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "smartbroker", "definitions", *args,
                               "--api", base], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    cli("export", str(path))
    api(d1, "/api/vhosts/cli-v", method="DELETE")
    poll(lambda: all(v["name"] != "cli-v" for v in api(d2, "/api/vhosts")), "cli-v gone")
    cli("import", str(path))
    poll(lambda: any(b["destination"] == "cq" and b["routing_key"] == "rk"
                     for b in api(d1, "/api/bindings/cli-v")), "the binding back on d1")
    assert api(d1, "/api/queues/cli-v/cq")["arguments"] == {"x-max-length": 9}


def test_a_change_etcd_refuses_is_an_error_and_undone(
        cluster: tuple[str, list[BrokerProcess]]) -> None:
    """A queue whose definition is over etcd's request limit: the API answers 500, and
    the node that took it drops it again (etcd is the truth)."""
    _, (d1, _) = cluster
    with pytest.raises(AssertionError, match="500.*refused"):
        api(d1, "/api/queues/%2F/too-big", {"durable": True,
                                            "arguments": {"x-pad": "p" * (2 << 20)}},
            method="PUT")
    poll(lambda: all(q["name"] != "too-big" for q in api(d1, "/api/queues/%2F")),
         "too-big dropped by d1")
