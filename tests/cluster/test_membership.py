"""Membership of real nodes on a real etcd: three brokers on free loopback ports see each
other through ``/api/nodes`` and ``cluster status``; a kill -9 is seen within the lease
TTL, a clean stop at once; a restart is seen up again; ``cluster forget`` removes a node
that is down and refuses one that is up; a second live holder of a name is refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from typer.testing import CliRunner

from smartbroker.cli.main import app
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import start_all, stop_all
from tests.conftest import assert_clean_log

TTL = 3  # seconds: the lease TTL the nodes get (SMARTBROKER_CLUSTER_LEASE_TTL)
SLACK = 4.0  # seconds past the TTL a busy 2-core machine may need to see an expiry
NAMES = ("n1", "n2", "n3")
CHROMIUM = "/usr/bin/chromium"


def poll(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``cond()`` held; fails at the deadline naming ``what``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def running(node: BrokerProcess) -> dict[str, bool]:
    """What ``node``'s /api/nodes says: name -> running."""
    return {n["name"]: n["running"] for n in node.get_json("/api/nodes")}


def cli(etcd: str, cluster: str, *args: str) -> Any:
    """``smartbroker cluster ...`` run in this process (typer's runner), against etcd."""
    result = CliRunner().invoke(app, ["cluster", *args, "--etcd", etcd,
                                      "--cluster-name", cluster])
    result.returncode = result.exit_code
    return result


def status(etcd: str, cluster: str) -> dict[str, dict[str, Any]]:
    done = cli(etcd, cluster, "status", "--json")
    assert done.returncode == 0, done.stderr
    return {n["name"]: n for n in json.loads(done.stdout)["nodes"]}


def node(tmp: Path, etcd: str, cluster: str, name: str) -> BrokerProcess:
    return BrokerProcess(tmp / name / "data", log_path=tmp / f"{name}.log", etcd=etcd,
                         node_name=name, cluster_name=cluster,
                         env={"SMARTBROKER_CLUSTER_LEASE_TTL": str(TTL)})


@pytest.fixture(scope="module")
def cluster(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three started nodes of one fresh cluster; each test leaves all three up."""
    tmp = tmp_path_factory.mktemp("membership")
    name = f"m-{free_port()}"
    nodes = {n: node(tmp, etcd.endpoint, name, n) for n in NAMES}
    try:
        start_all(nodes.values())
        yield {"etcd": etcd.endpoint, "name": name, "nodes": nodes, "tmp": tmp}
    finally:
        stop_all(nodes.values())


def test_every_node_sees_every_node(cluster: dict[str, Any]) -> None:
    nodes = cluster["nodes"]
    for proc in nodes.values():
        poll(lambda p=proc: running(p) == dict.fromkeys(NAMES, True), 10,
             f"{proc.node_name} sees all three up")
    one = nodes["n1"].get_json("/api/nodes/n2")
    assert one["name"] == "n2" and one["type"] == "disc" and one["running"] is True
    assert one["amqp_port"] == nodes["n2"].port and one["uptime"] >= 0
    me = nodes["n1"].get_json("/api/nodes/n1")
    assert "mem_used" in me and me["running"] is True  # this node: measured here
    assert nodes["n1"].get_json("/api/overview")["cluster_name"] == cluster["name"]
    assert nodes["n1"].get_json("/api/cluster-name") == {"name": cluster["name"]}
    metrics = httpx.get(f"http://127.0.0.1:{nodes['n1'].management_port}/metrics",
                        auth=("guest", "guest"), timeout=5).text
    assert f'rabbitmq_cluster="{cluster["name"]}"' in metrics and 'rabbitmq_node="n1"' in metrics
    seen = status(cluster["etcd"], cluster["name"])
    assert {n: s["running"] for n, s in seen.items()} == dict.fromkeys(NAMES, True)
    assert seen["n3"]["amqp_port"] == nodes["n3"].port and seen["n3"]["leaders"] == 0


def test_kill_9_is_seen_within_the_lease_then_the_restart(cluster: dict[str, Any]) -> None:
    nodes = cluster["nodes"]
    nodes["n3"].kill()
    t = poll(lambda: not running(nodes["n1"])["n3"] and not running(nodes["n2"])["n3"],
             TTL + SLACK, "n1 and n2 see n3 down after kill -9")
    assert t > 0.5, "a kill -9 cannot be seen before the lease expires"
    assert status(cluster["etcd"], cluster["name"])["n3"]["running"] is False
    assert nodes["n1"].get_json("/api/nodes/n3")["running"] is False

    nodes["n3"].start()  # its old lease may still be alive: the same data dir takes it over
    poll(lambda: running(nodes["n1"])["n3"] and running(nodes["n2"])["n3"], 10,
         "n1 and n2 see n3 up again")
    assert running(nodes["n3"]) == dict.fromkeys(NAMES, True)


def test_a_restart_right_after_kill_9_takes_its_name_back(cluster: dict[str, Any]) -> None:
    """The old lease still holds the name, but it carries this data directory's node id:
    the restarted node revokes it and registers, instead of refusing a 'duplicate'."""
    nodes = cluster["nodes"]
    ups = nodes["n1"].log().count("cluster node n2 is up")
    nodes["n2"].kill()
    nodes["n2"].start()  # well within the TTL: the killed process's lease is alive
    assert "is in use by a running node" not in nodes["n2"].log()
    # the takeover revokes the old lease (n1 sees n2 go) and registers anew (and come)
    poll(lambda: nodes["n1"].log().count("cluster node n2 is up") == ups + 1, 10,
         "n1 sees the new n2 come up")
    assert running(nodes["n1"])["n2"] and running(nodes["n2"]) == dict.fromkeys(NAMES, True)


def test_clean_stop_is_seen_at_once_and_forget(cluster: dict[str, Any]) -> None:
    nodes, etcd, name = cluster["nodes"], cluster["etcd"], cluster["name"]
    refused = cli(etcd, name, "forget", "n3")
    assert refused.returncode == 1 and "is running" in refused.stderr

    nodes["n3"].stop()
    # the lease is revoked on the way out: no waiting for the TTL
    poll(lambda: not running(nodes["n1"])["n3"], TTL * 0.8, "n1 sees the stop of n3")
    done = cli(etcd, name, "forget", "n3")
    assert done.returncode == 0, done.stderr
    poll(lambda: "n3" not in running(nodes["n1"]) and "n3" not in running(nodes["n2"]), 5,
         "n3 forgotten by n1 and n2")
    assert "n3" not in status(etcd, name)
    again = cli(etcd, name, "forget", "n3")
    assert again.returncode == 1 and "no node 'n3'" in again.stderr

    nodes["n3"].start()
    poll(lambda: running(nodes["n1"]).get("n3") is True, 10, "n3 back after forget")


def test_a_lost_lease_is_taken_again(cluster: dict[str, Any]) -> None:
    """A lease that expired behind the node's back (etcd cut off longer than the TTL, a
    stalled loop) is seen at the next keep-alive: the node registers again."""
    from smartbroker.cluster.etcd_client import EtcdClient

    async def revoke() -> None:
        async with EtcdClient(cluster["etcd"], cluster["name"]) as etcd:
            kv = await etcd.get("nodes/n1")
            assert kv is not None and kv.lease
            await etcd.revoke_lease(kv.lease)

    nodes = cluster["nodes"]
    asyncio.run(revoke())
    poll(lambda: "lease of node n1 expired: registering again" in nodes["n1"].log(), TTL + SLACK,
         "n1 notices its lease is gone")
    poll(lambda: running(nodes["n2"])["n1"] and running(nodes["n3"])["n1"], 5, "n1 up again")
    assert "cluster node n1 is down" in nodes["n2"].log()


def test_the_dashboard_shows_the_nodes(cluster: dict[str, Any]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    nodes = cluster["nodes"]
    nodes["n2"].stop()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{nodes['n1'].management_port}/#nodes")
                page.wait_for_selector('#nodes-body tr[data-node="n2"][data-running="false"]',
                                       timeout=10_000)
                rows = page.eval_on_selector_all(
                    "#nodes-body tr", "rows => rows.map(r => r.innerText.split('\\t')[1])")
                assert rows == ["running", "down", "running"]
            finally:
                browser.close()
    finally:
        nodes["n2"].start()


def test_a_name_held_by_a_live_node_is_refused(cluster: dict[str, Any]) -> None:
    twin = node(cluster["tmp"] / "twin", cluster["etcd"], cluster["name"], "n1")
    with pytest.raises(RuntimeError, match="exited early"):
        twin.start(timeout=30)
    assert "node name 'n1' is in use by a running node" in twin.log()
    assert twin.proc is not None and twin.proc.returncode == 1
    assert running(cluster["nodes"]["n2"]) == dict.fromkeys(NAMES, True)


def test_unreachable_etcd_refuses_to_start(tmp_path: Path) -> None:
    lone = BrokerProcess(tmp_path / "data", etcd=f"http://127.0.0.1:{free_port()}",
                         node_name="lone")
    with pytest.raises(RuntimeError, match="exited early"):
        lone.start(timeout=30)
    assert "error: cannot reach etcd at http://127.0.0.1:" in lone.log()
    assert not lone.tracebacks()


@pytest.mark.slow
def test_a_node_cut_off_from_etcd_serves_and_rejoins(tmp_path: Path) -> None:
    """Its own etcd, stopped under a running node: AMQP goes on, one warning, and the node
    is a member again once etcd is back."""
    from smartbroker.cluster.etcd_process import EtcdProcess

    own = EtcdProcess(tmp_path / "etcd").start()
    proc = node(tmp_path, own.endpoint, "cut", "solo")
    try:
        proc.start()
        conn = pika.BlockingConnection(pika.URLParameters(proc.url))
        ch = conn.channel()
        # declared while etcd answers: every queue is a cluster-wide definition, exclusive
        # ones too (as in RabbitMQ), so a declare-ok waits for etcd
        ch.queue_declare("local", exclusive=True)
        own.stop()
        ch.basic_publish("", "local", b"still here")
        poll(lambda: ch.basic_get("local", auto_ack=True)[2] == b"still here", 5,
             "a local publish and get without etcd")
        poll(lambda: "etcd unreachable" in proc.log(), TTL + SLACK, "the warning")
        own.start()
        poll(lambda: "etcd reachable again" in proc.log(), 20, "rejoined")
        assert proc.log().count("etcd unreachable") == 1
        assert status(own.endpoint, "cut")["solo"]["running"] is True
        conn.close()
    finally:
        proc.stop()
        own.stop()
    assert_clean_log(proc)
