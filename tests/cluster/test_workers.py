"""``smartbroker serve --workers 2``: two nodes and their own etcd behind one AMQP port.

Real processes on free loopback ports: the supervisor starts etcd and two workers sharing
the AMQP port with SO_REUSEPORT. Connections land on both; a queue declared on one
connection is published to on another and consumed on a third, whichever worker each
landed on; a subset of the integration suite passes against it; SIGTERM leaves no process
behind; no etcd binary is one line and a non-zero exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from smartbroker.cluster.etcd_process import etcd_binary
from smartbroker.launcher import free_port
from tests.cluster.workers_process import ROOT, Workers


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    running = Workers(tmp_path_factory.mktemp("workers")).start()
    try:
        yield running
    finally:
        running.stop()
        assert "Traceback" not in running.log(), running.log()


@pytest.fixture
def workers(supervisor: Workers) -> Workers:
    """The module's ``serve --workers``, started again when a test before this one (on
    this pytest-xdist process, in whatever order) stopped it."""
    if supervisor.proc is None or supervisor.proc.poll() is not None:
        supervisor.start()
    return supervisor


def connections_by_node(workers: Workers, conns: list[pika.BlockingConnection]) \
        -> dict[str, list[pika.BlockingConnection]]:
    """Which node each open connection landed on, by its local port among the rows each
    node's /api/connections shows as its own (every node lists the cluster's clients)."""
    by_port = {c._impl._transport._sock.getsockname()[1]: c for c in conns}  # noqa: SLF001
    found: dict[str, list[pika.BlockingConnection]] = {}
    for name, port in workers.apis().items():
        listed = workers.get("/api/connections", port)
        assert isinstance(listed, list)
        found[name] = [by_port[c["peer_port"]] for c in listed
                       if c["peer_port"] in by_port and c["node"] == name]
    return found


def test_connections_land_on_both_workers(workers: Workers) -> None:
    conns = [pika.BlockingConnection(pika.URLParameters(workers.url)) for _ in range(16)]
    try:
        by_node = connections_by_node(workers, conns)
        assert len(by_node) == 2
        assert all(node.endswith(("-w0", "-w1")) for node in by_node)
        assert all(by_node.values()), {n: len(c) for n, c in by_node.items()}
        assert sum(map(len, by_node.values())) == 16
    finally:
        for c in conns:
            c.close()


def test_declare_publish_consume_on_either_worker(workers: Workers) -> None:
    conns = [pika.BlockingConnection(pika.URLParameters(workers.url)) for _ in range(12)]
    try:
        by_node = connections_by_node(workers, conns)
        (a, a_conns), (b, b_conns) = sorted(by_node.items())
        # declare on w1, publish through w0, consume on w1: publishes cross the link, and
        # worker 0's API (the cluster's) lists a queue led by w1
        declare, publish, consume = b_conns[0], a_conns[0], b_conns[-1]
        ch = declare.channel()
        ch.queue_declare("workers-q", durable=True,
                         arguments={"x-queue-leader-locator": "client-local"})
        deadline = time.monotonic() + 10  # w0 learns of it through etcd (the known race)
        while "workers-q" not in {q["name"] for q in workers.get("/api/queues")}:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pub = publish.channel()
        pub.confirm_delivery()
        for i in range(50):
            pub.basic_publish("", "workers-q", f"m{i}".encode(),
                              pika.BasicProperties(delivery_mode=2))
        queues = workers.get("/api/queues")  # worker 0's API: the whole cluster's queues
        assert isinstance(queues, list)
        assert {q["name"]: q["node"] for q in queues}["workers-q"] == b
        assert a.endswith("-w0") and b.endswith("-w1")
        sub = consume.channel()
        sub.basic_qos(prefetch_count=10)
        got = []
        for method, _props, body in sub.consume("workers-q", inactivity_timeout=10):
            assert method is not None, f"only {len(got)} of 50 arrived"
            got.append(body.decode())
            sub.basic_ack(method.delivery_tag)
            if len(got) == 50:
                break
        sub.cancel()
        assert got == [f"m{i}" for i in range(50)]
        ch.queue_delete("workers-q")
    finally:
        for c in conns:
            c.close()


def run_integration(workers: Workers, files: list[str]) -> None:
    """Files of the integration suite, run against the two workers as against an
    external broker (each test's connections land on either worker)."""
    env = {**os.environ, "SMARTBROKER_TEST_URL": workers.url,
           "SMARTBROKER_TEST_API": f"http://guest:guest@127.0.0.1:{workers.http}"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         *(f"tests/integration/{f}" for f in files)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    print(summary)
    assert " passed" in summary and "error" not in summary, summary


def test_integration_subset_passes(workers: Workers) -> None:
    run_integration(workers, ["test_confirms.py", "test_routing.py", "test_basic_get.py",
                              "test_basic_qos.py"])


def test_integration_across_connections(workers: Workers) -> None:
    run_integration(workers, ["test_basic_ack.py"])


def test_exclusive_queues_and_rpc_across_workers(workers: Workers) -> None:
    """Exclusive queues 405 on the other worker, direct reply-to and celery's remote
    control (an exclusive pidbox queue behind a fanout) whichever worker each lands on."""
    run_integration(workers, ["test_queues.py", "test_direct_reply_to.py::test_rpc_round_trip",
                              "test_celery.py::test_remote_control_ping"])


def test_dead_worker_is_started_again(workers: Workers) -> None:
    """kill -9 of a serving worker: the supervisor starts it again (same name and data
    directory) and the cluster is whole again."""
    def worker_pid(suffix: bytes) -> int:
        for pid in workers.descendants():
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if b"--node-name" in argv and argv[argv.index(b"--node-name") + 1].endswith(suffix):
                return pid
        raise AssertionError(f"no worker {suffix!r}")

    os.kill(worker_pid(b"-w1"), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # the supervisor saw it die, and its API answers again
        assert workers.proc is not None and workers.proc.poll() is None, workers.log()
        if "exited with code -9: starting it again" in workers.log():
            try:  # the new process answers on the worker's port (the old one is dead)
                ports = {n[-3:]: p for n, p in workers.apis().items()}
                workers.get("/api/overview", ports["-w1"])
                break
            except (KeyError, OSError):
                pass
        assert time.monotonic() < deadline, workers.log()[-3000:]
        time.sleep(0.1)


def test_sigterm_stops_every_process(workers: Workers) -> None:
    children = workers.descendants()
    assert len(children) == 3  # etcd and two workers
    assert workers.stop() == 0
    left = [pid for pid in children if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert left == []
    assert workers.log().count("INFO smartbroker: stopped") >= 2


def test_restart_on_the_same_data_dir(workers: Workers) -> None:
    """Stopped, then started again: etcd comes back from its data (on new ports), and so
    do a durable queue and its persistent message."""
    with pika.BlockingConnection(pika.URLParameters(workers.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("after-restart", durable=True)
        ch.basic_publish("", "after-restart", b"kept", pika.BasicProperties(delivery_mode=2))
    assert workers.stop() == 0
    workers.start()
    with pika.BlockingConnection(pika.URLParameters(workers.url)) as conn:
        method, _props, body = conn.channel().basic_get("after-restart", auto_ack=True)
    assert method is not None and body == b"kept"
    assert workers.stop() == 0


def test_no_etcd_binary_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smartbroker", "serve", "--workers", "2",
         "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env={**os.environ, "PATH": str(tmp_path)}, capture_output=True, text=True,
        timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: serve --workers needs etcd: no 'etcd' binary on PATH (Debian: apt-get "
        "install etcd-server), or give --etcd URL"]


def test_bad_worker_count_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smartbroker", "serve", "--workers", "many",
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --workers takes a number or 'auto', not 'many'"
