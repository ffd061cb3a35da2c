"""Cluster nodes in network namespaces, so that a test can cut one node off for real.

On loopback every node reaches every other node and etcd whatever happens; a partition
needs separate network stacks. Each node gets its own namespace with two links:

- a **cluster link** to a bridge (in a hub namespace of its own): the other nodes and
  etcd are there, on ``10.231.K.0/24``. ``cut(node)`` takes the bridge's end of this link
  down (a pulled cable: packets vanish, no error comes back), ``heal(node)`` brings it up;
- a **client link**, a point-to-point veth to the root namespace (``10.232.K.4i+2``),
  that a cut leaves alone: the test's clients stay connected to a cut-off node and can
  see that it confirms nothing, instead of losing their connection and proving nothing.

etcd runs in the root namespace on its own end of the bridge (``10.231.K.1``); the root
namespace forwards nothing (no ``ip_forward``), so a node reaches only its own client
link's peer and the bridge. Every name carries a per-run prefix with the owner's pid, and
``Network.close`` (the ``network`` context) deletes every namespace, which deletes every
veth with it; namespaces left by a run that was killed (its pid is gone) are removed by
the next run. Needs root and ``ip`` (iproute2); ``NetnsUnavailable`` says why not, and
callers skip with it. Standard library only, so that benchmarks/chaos.py can use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary
from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import all_members, start_all, stop_all

OWNER = "sbnet"  # every namespace this module makes is named sbnet-<pid>-<tag>-<role>
CLUSTER_NET, CLIENT_NET = "10.231", "10.232"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, a sandbox forbids it)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill what still runs in it (a broker of a killed run), then delete it: its devices
    and their veth peers in the root namespace go with it."""
    for pid in ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def remove_stale() -> None:
    """Namespaces of runs whose process is gone (killed before their cleanup ran), and
    our veth ends in the root namespace whose peer's namespace has no name any more."""
    for name in namespaces():
        parts = name.split("-")
        if parts[0] == OWNER and len(parts) > 2 and parts[1].isdigit() \
                and not _pid_alive(int(parts[1])):
            _delete_namespace(name)
    named = set(re.findall(r"\(id: (\d+)\)", ip("netns", "list").stdout))
    for link, nsid in re.findall(r"^\d+: (sb\d+(?:r|c\d+))@\S+.*?link-netnsid (\d+)",
                                 ip("-o", "link", "show").stdout, re.M):
        if nsid not in named:
            ip("link", "del", link, check=False)


def check_available() -> None:
    """Raise ``NetnsUnavailable`` with the reason unless namespaces and veths work."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("no ip command (Debian: apt-get install iproute2)")
    probe = f"{OWNER}-{os.getpid()}-probe{secrets.token_hex(2)}"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "name", "a", "type", "veth", "peer", "name", "b")
    except RuntimeError as exc:
        raise NetnsUnavailable(f"cannot make a network namespace with a veth: {exc}") from None
    finally:
        ip("netns", "del", probe, check=False)


def _free_subnet() -> int:
    """A third octet K with no address in 10.231.K.0/24 or 10.232.K.0/24 in the root
    namespace (parallel runs each take their own)."""
    used = ip("-o", "-4", "addr", "show").stdout
    for _ in range(200):
        k = secrets.randbelow(250) + 1
        if f"{CLUSTER_NET}.{k}." not in used and f"{CLIENT_NET}.{k}." not in used:
            return k
    raise RuntimeError("no free 10.231.K.0/24 subnet")


@dataclass
class NodeNet:
    """One node's namespace: where other nodes reach it (``cluster_ip``, on the bridge)
    and where the test's clients reach it (``client_ip``, never cut)."""
    name: str
    netns: str
    port: str  # the bridge's end of its cluster link, in the hub namespace
    cluster_ip: str
    client_ip: str

    def wrapper(self) -> list[str]:
        """The command prefix that runs a program in this namespace (``ip`` execs it,
        so the pid is the program's own: kill -9 and SIGSTOP reach it)."""
        return ["ip", "netns", "exec", self.netns]


class Network:
    """A bridge, the root namespace on it (``etcd_ip``), and one namespace per node."""

    def __init__(self) -> None:
        check_available()
        remove_stale()
        self.k = _free_subnet()
        self.prefix = f"{OWNER}-{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"{self.prefix}-hub"
        self.etcd_ip = f"{CLUSTER_NET}.{self.k}.1"
        self.nodes: dict[str, NodeNet] = {}
        self._made: list[str] = []
        self._root_links: list[str] = []  # our veth ends in the root namespace
        try:
            self._add_namespace(self.hub)
            ip("-n", self.hub, "link", "add", "name", "br0", "type", "bridge")
            ip("-n", self.hub, "link", "set", "br0", "up")
            root_end = f"sb{self.k}r"  # root namespace names must not clash between runs
            self._root_links.append(root_end)
            ip("link", "add", "name", root_end, "type", "veth", "peer", "name", "root",
               "netns", self.hub)
            self._attach("root")
            ip("addr", "add", f"{self.etcd_ip}/24", "dev", root_end)
            ip("link", "set", root_end, "up")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        # no TIME_WAIT sockets: each would keep the namespace (and its veth in the root
        # namespace) alive, nameless, long after its deletion
        ip("netns", "exec", name, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_max_tw_buckets")

    def _attach(self, port: str) -> None:
        ip("-n", self.hub, "link", "set", port, "master", "br0")
        ip("-n", self.hub, "link", "set", port, "up")

    def add_node(self, name: str) -> NodeNet:
        """A namespace for node ``name`` with its cluster and client links up."""
        i = len(self.nodes) + 1
        if i > 60:
            raise ValueError("at most 60 nodes per network")
        ns = f"{self.prefix}-{name}"
        self._add_namespace(ns)
        node = NodeNet(name, ns, f"p{i}", f"{CLUSTER_NET}.{self.k}.{10 + i}",
                       f"{CLIENT_NET}.{self.k}.{4 * i + 2}")
        ip("-n", self.hub, "link", "add", "name", node.port, "type", "veth", "peer", "name", "cl",
           "netns", ns)
        self._attach(node.port)
        ip("-n", ns, "addr", "add", f"{node.cluster_ip}/24", "dev", "cl")
        ip("-n", ns, "link", "set", "cl", "up")
        root_end = f"sb{self.k}c{i}"
        self._root_links.append(root_end)
        ip("link", "add", "name", root_end, "type", "veth", "peer", "name", "cli", "netns", ns)
        ip("addr", "add", f"{CLIENT_NET}.{self.k}.{4 * i + 1}/30", "dev", root_end)
        ip("link", "set", root_end, "up")
        ip("-n", ns, "addr", "add", f"{node.client_ip}/30", "dev", "cli")
        ip("-n", ns, "link", "set", "cli", "up")
        self.nodes[name] = node
        return node

    def cut(self, name: str) -> None:
        """Partition ``name`` from the other nodes and from etcd (its clients stay)."""
        ip("-n", self.hub, "link", "set", self.nodes[name].port, "down")

    def heal(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.nodes[name].port, "up")

    def is_cut(self, name: str) -> bool:
        out = ip("-n", self.hub, "-o", "link", "show", self.nodes[name].port).stdout
        return "state DOWN" in out or ",UP" not in out.split(">")[0]

    def close(self) -> None:
        """Delete every namespace of this run (nodes first, the hub last)."""
        for name in reversed(self._made):
            _delete_namespace(name)
        self._made.clear()
        for link in self._root_links:  # gone with their namespace, unless a socket holds it
            ip("link", "del", link, check=False)
        self._root_links.clear()


@contextlib.contextmanager
def network() -> Iterator[Network]:
    net = Network()
    try:
        yield net
    finally:
        net.close()


def netns_etcd(net: Network, directory: Path, **kwargs: Any) -> EtcdProcess:
    """An etcd (not started) listening on the root namespace's end of the bridge."""
    return EtcdProcess(directory, host=net.etcd_ip, **kwargs)


def netns_node(net: Network, tmp: Path, name: str, etcd: str, cluster: str, *,
               env: dict[str, str] | None = None, **kwargs: Any) -> BrokerProcess:
    """Node ``name`` in a namespace of its own (made here), built as
    ``node_group.cluster_node`` builds one (3 s lease): it listens on both its links,
    other nodes dial its cluster address, clients its client address."""
    node = net.add_node(name)
    extra: Sequence[str] = kwargs.pop("extra_args", ())
    return BrokerProcess(tmp / name / "data", log_path=tmp / f"{name}.log", etcd=etcd,
                         node_name=name, cluster_name=cluster, host=node.client_ip,
                         listen_host="0.0.0.0", wrapper=node.wrapper(),
                         extra_args=["--advertise-host", node.cluster_ip, *extra],
                         # guest from the client link, which is not loopback
                         env={"SMARTBROKER_CLUSTER_LEASE_TTL": "3",
                              "SMARTBROKER_LOOPBACK_USERS": "[]", **(env or {})}, **kwargs)


@contextlib.contextmanager
def netns_cluster(tmp: Path, names: Sequence[str], prefix: str
                  ) -> Iterator[tuple[Network, dict[str, BrokerProcess]]]:
    """Nodes ``names`` in namespaces of their own and their etcd, every node seeing every
    node up before the block (a test heals what it cut); skips the test without etcd or
    network namespaces (not root)."""
    if etcd_binary() is None:
        pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    try:
        check_available()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    with network() as net, netns_etcd(net, tmp / "etcd") as etcd:
        cluster = f"{prefix}-{secrets.token_hex(4)}"
        procs = [netns_node(net, tmp, name, etcd.endpoint, cluster) for name in names]
        try:
            start_all(procs)
            all_members(procs)
            yield net, {proc.node_name or "": proc for proc in procs}
        finally:
            stop_all(procs)
