"""Three (or N) smartbroker nodes with their own etcd, for the replication benchmarks
(chaos.py, failover.py, quorum.py), and the faults they inject: kill -9 and restart,
SIGSTOP and SIGCONT, and, with network namespaces (tests/cluster/netns.py), cutting a
node off from the others and from etcd while its clients stay connected.

``netns=False`` (or no namespaces here) runs the nodes on loopback: no partitions then.
Standard library plus smartbroker and the test harness's netns module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from smartbroker.cluster.etcd_process import EtcdProcess  # noqa: E402
from smartbroker.launcher import BrokerProcess  # noqa: E402
from tests.cluster.netns import NetnsUnavailable, Network, netns_etcd, netns_node  # noqa: E402

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy


class ReplicaCluster:
    """Nodes ``n1..nN`` of one cluster and their etcd; what each node suffers now
    (``killed``, ``paused``, ``cut``) so that the API is asked of a healthy node."""

    def __init__(self, tmp: Path, nodes: int = 3, *, netns: bool = True,
                 lease_ttl: float | None = None, log_level: str = "warning") -> None:
        self.tmp = tmp
        self.names = [f"n{i}" for i in range(1, nodes + 1)]
        self.net: Network | None = None
        self.netns_reason = ""
        if netns:
            try:
                self.net = Network()
            except NetnsUnavailable as exc:
                self.netns_reason = str(exc)
        else:
            self.netns_reason = "not asked for (--no-netns)"
        env = {"SMARTBROKER_CLUSTER_LEASE_TTL": str(lease_ttl)} if lease_ttl else {}
        cluster = self.cluster_name = f"bench-{os.getpid()}"
        if self.net is not None:
            self.etcd = netns_etcd(self.net, tmp / "etcd", new_session=True)
            self.nodes = {n: netns_node(self.net, tmp, n, self.etcd.endpoint, cluster,
                                        env={"SMARTBROKER_CLUSTER_LEASE_TTL": "5", **env},
                                        log_level=log_level, new_session=True)
                          for n in self.names}
        else:
            self.etcd = EtcdProcess(tmp / "etcd", new_session=True)
            self.nodes = {n: BrokerProcess(tmp / n / "data", log_path=tmp / f"{n}.log",
                                           etcd=self.etcd.endpoint, node_name=n,
                                           cluster_name=cluster, env=env,
                                           log_level=log_level, new_session=True)
                          for n in self.names}
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.cut_off: set[str] = set()

    @property
    def partitions(self) -> bool:
        return self.net is not None

    def start(self) -> ReplicaCluster:
        self.etcd.start()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda proc: proc.start(), self.nodes.values()))
        self.wait_members()
        return self

    def wait_members(self, timeout: float = 60.0) -> None:
        """Until every healthy node sees every node that is not killed up."""
        want = set(self.names) - self.killed
        deadline = time.monotonic() + timeout
        for name in self.healthy():
            while want - self.running_seen_by(name):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} does not see {sorted(want)} up")
                time.sleep(0.1)

    def running_seen_by(self, name: str) -> set[str]:
        try:
            return {n["name"] for n in self.nodes[name].get_json("/api/nodes") if n["running"]}
        except (OSError, ValueError):
            return set()

    def healthy(self) -> list[str]:
        return [n for n in self.names if n not in self.killed | self.paused | self.cut_off]

    def url(self, name: str) -> str:
        return self.nodes[name].url

    def api(self, path: str) -> Any:
        """GET ``path`` from the first healthy node that answers (None if none does)."""
        for name in self.healthy():
            with contextlib.suppress(OSError, ValueError):
                return self.nodes[name].get_json(path)
        return None

    def queue(self, name: str, vhost: str = "/") -> dict[str, Any]:
        """The queue as the API shows it, asked of its leader when that one is healthy
        (another node's message counts may lag)."""
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}/" \
               f"{urllib.parse.quote(name, safe='')}"
        info = self.api(path)
        leader = info.get("leader") or info.get("node") if isinstance(info, dict) else None
        if leader in self.healthy():
            with contextlib.suppress(OSError, ValueError):
                info = self.nodes[leader].get_json(path)
        return info if isinstance(info, dict) else {}

    def replica_set(self, queue: str, vhost: str = "/") -> dict[str, Any]:
        """The queue's ``replica/isr/<log id>`` record in etcd (``members``, ``isr``,
        ``epoch``; docs/replication.md), read through etcd's JSON gateway; {} if none."""
        key = f"/smartbroker/{self.cluster_name}/replica/isr/" \
              f"{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
        req = urllib.request.Request(
            f"{self.etcd.endpoint}/v3/kv/range", method="POST",
            data=json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode())
        try:
            with _DIRECT.open(req, timeout=2) as resp:
                kvs = json.loads(resp.read()).get("kvs") or []
        except (OSError, ValueError):
            return {}
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else {}

    def leader(self, queue: str) -> str | None:
        info = self.queue(queue)
        return info.get("leader") or info.get("node")

    # ------------------------------------------------------------------ faults

    def kill(self, name: str) -> None:
        self.nodes[name].kill()
        self.killed.add(name)

    def restart(self, name: str) -> None:
        self.nodes[name].start()
        self.killed.discard(name)

    def pause(self, name: str) -> None:
        os.kill(self.nodes[name].pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        os.kill(self.nodes[name].pid, signal.SIGCONT)
        self.paused.discard(name)

    def cut(self, name: str) -> None:
        assert self.net is not None, "partitions need network namespaces"
        self.net.cut(name)
        self.cut_off.add(name)

    def heal(self, name: str) -> None:
        assert self.net is not None
        self.net.heal(name)
        self.cut_off.discard(name)

    def repair(self) -> None:
        """Undo every fault: resume, heal, restart (then wait for membership)."""
        for name in list(self.paused):
            self.resume(name)
        for name in list(self.cut_off):
            self.heal(name)
        for name in list(self.killed):
            self.restart(name)
        self.wait_members()

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.nodes.items() if p.alive()}

    def tracebacks(self) -> dict[str, int]:
        return {n: len(p.tracebacks()) for n, p in self.nodes.items()}

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for name in list(self.paused):
                self.resume(name)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda proc: proc.stop(), self.nodes.values()))
        self.etcd.stop()
        if self.net is not None:
            self.net.close()
