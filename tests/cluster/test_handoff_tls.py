"""``serve --workers 2`` with TLS: a TLS connection never moves between workers.

Its socket carries OpenSSL's session state, which lives in the worker that accepted it:
passing the file descriptor would hand over ciphertext nobody can read. So a TLS client
on the worker not leading its queue stays there and is forwarded (as before), while a
plain connection of the same workers moves. Asserted from outside: which worker's
/api/connections (HTTPS here) lists each named connection, and the queue's counts.
"""

from __future__ import annotations

import base64
import itertools
import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from smartbroker.cluster.etcd_process import etcd_binary
from smartbroker.launcher import free_port
from tests.cluster.workers_process import Workers
from tests.security.test_tls import _cert, _key, _write

_names = itertools.count()
_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


class TLSWorkers:
    """``serve --workers 2`` with an AMQPS port (its API is HTTPS then)."""

    def __init__(self, workers: Workers, tls_port: int, ca: Path) -> None:
        self.workers, self.tls_port, self.ca = workers, tls_port, ca
        ctx = ssl.create_default_context(cafile=str(ca))
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                 urllib.request.HTTPSHandler(context=ctx))

    def get(self, path: str, port: int | None = None) -> object:
        req = urllib.request.Request(f"https://localhost:{port or self.workers.http}{path}",
                                     headers=_AUTH)
        with self._open.open(req, timeout=5) as resp:
            return json.loads(resp.read())

    def apis(self) -> dict[str, int]:
        nodes = self.get("/api/nodes")
        assert isinstance(nodes, list)
        return {n["name"]: n.get("http_port", self.workers.http) for n in nodes if n["running"]}

    def where(self, name: str) -> str | None:
        for node, port in self.apis().items():
            listed = self.get("/api/connections", port)
            assert isinstance(listed, list)
            if any((c.get("client_properties") or {}).get("connection_name") == name
                   and c.get("node") == node  # every worker lists the cluster's clients
                   for c in listed):
                return node
        return None

    def connect_on(self, node: str, tls: bool) -> tuple[pika.BlockingConnection, str]:
        for _ in range(60):
            name = f"handoff-tls-{next(_names)}"
            if tls:
                ctx = ssl.create_default_context(cafile=str(self.ca))
                params = pika.ConnectionParameters(
                    "localhost", self.tls_port, credentials=pika.PlainCredentials("guest", "guest"),
                    ssl_options=pika.SSLOptions(ctx, "localhost"))
            else:
                params = pika.URLParameters(self.workers.url)
            params.client_properties = {"connection_name": name}
            conn = pika.BlockingConnection(params)
            if self.where(name) == node:
                return conn, name
            conn.close()
        raise AssertionError(f"no connection landed on {node} in 60 tries")


@pytest.fixture(scope="module")
def tls_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSWorkers]:
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    pki = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("smartbroker test CA", ca_key, ca=True)
    _write(pki / "ca", ca, ca_key)
    server_key = _key()
    _write(pki / "server", _cert("localhost", server_key, ca.subject, ca_key, server=True),
           server_key)
    tls_port = free_port()
    with pytest.MonkeyPatch.context() as env:  # the supervisor passes them on
        env.setenv("SMARTBROKER_TLS_PORT", str(tls_port))
        env.setenv("SMARTBROKER_TLS_CERT", str(pki / "server.crt"))
        env.setenv("SMARTBROKER_TLS_KEY", str(pki / "server.key"))
        workers = Workers(tmp_path_factory.mktemp("handoff-tls")).start()
    try:
        yield TLSWorkers(workers, tls_port, pki / "ca.crt")
    finally:
        workers.stop()
        print(workers.log()[-6000:])  # shown when a test failed: which moves happened
        assert "Traceback" not in workers.log(), workers.log()


def test_a_tls_connection_stays_a_plain_one_moves(tls_workers: TLSWorkers) -> None:
    w0, w1 = sorted(tls_workers.apis())
    assert w0.endswith("-w0") and w1.endswith("-w1")
    declarer, _ = tls_workers.connect_on(w1, tls=False)
    declarer.channel().queue_declare("ho-tls", durable=True,
                                     arguments={"x-queue-leader-locator": "client-local"})
    deadline = time.monotonic() + 10
    while True:  # both workers know the queue and its leader (its placement applied)
        seen = [{q["name"]: q.get("node") for q in tls_workers.get("/api/queues", p)}  # type: ignore[union-attr]
                .get("ho-tls") for p in tls_workers.apis().values()]
        if seen == [w1, w1]:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
    for tls, expected in ((True, w0), (False, w1)):
        conn, name = tls_workers.connect_on(w0, tls=tls)
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", "ho-tls", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        assert tls_workers.where(name) == expected, (tls, name)
        conn.close()
    while True:  # all 40 in the queue: none lost, none twice
        info = tls_workers.get("/api/queues/%2F/ho-tls")
        assert isinstance(info, dict)
        if info.get("messages") == 40:
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.02)
    declarer.channel().queue_delete("ho-tls")
    declarer.close()
