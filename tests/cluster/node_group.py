"""A test cluster's broker processes: each node built the same way (``cluster_node``),
started and stopped together as a cluster is in production (the joins and leaves overlap,
so a bug there shows, and a fixture waits for the slowest node instead of the sum of
them), and ``poll`` for what the nodes must come to agree on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smartbroker.launcher import BrokerProcess, free_port
from tests.conftest import assert_clean_log

T = TypeVar("T")


def cluster_node(tmp: Path, name: str, etcd: str, cluster: str, *,
                 env: Mapping[str, str] | None = None, **kwargs: Any) -> BrokerProcess:
    """Node ``name`` of ``cluster``: data under ``tmp/name``, log ``tmp/name.log``, and a
    3 s membership lease, so that a killed node is seen down well within a test."""
    return BrokerProcess(tmp / name / "data", log_path=tmp / f"{name}.log", etcd=etcd,
                         node_name=name, cluster_name=cluster,
                         env={"SMARTBROKER_CLUSTER_LEASE_TTL": "3", **(env or {})}, **kwargs)


def poll(cond: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """The first truthy ``cond()``, asked every 50 ms; fails at ``timeout`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (found := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return found


def start_all(procs: Iterable[BrokerProcess]) -> None:
    """Each started (API answering); the first failure is raised once all have tried."""
    group = list(procs)
    with ThreadPoolExecutor(len(group)) as pool:
        list(pool.map(lambda proc: proc.start(), group))


def stop_all(procs: Iterable[BrokerProcess]) -> None:
    """All stopped at once by SIGTERM; each running node must leave gracefully (exit 0,
    not killed after the stop timeout: a node hanging in its cluster shutdown was), and
    its log must hold no traceback."""
    group = list(procs)
    running = [proc for proc in group if proc.alive()]
    with ThreadPoolExecutor(max(len(group), 1)) as pool:
        codes = list(pool.map(lambda proc: proc.stop(), group))
    hung = [f"{proc.node_name or proc.log_path}: exit {code}"
            for proc, code in zip(group, codes, strict=True) if proc in running and code != 0]
    for proc in group:
        assert_clean_log(proc)
    assert not hung, f"nodes stopped together did not exit cleanly: {hung}"


@contextlib.contextmanager
def running_cluster(tmp: Path, etcd: str, names: Iterable[str]) -> Iterator[list[BrokerProcess]]:
    """Nodes ``names`` of a fresh cluster (its own key prefix in ``etcd``), started
    together, stopped together (cleanly: ``stop_all``) when the block ends."""
    cluster = f"{tmp.name}-{free_port()}"
    procs = [cluster_node(tmp, n, etcd, cluster) for n in names]
    try:
        start_all(procs)
        yield procs
    finally:
        stop_all(procs)


def all_members(procs: Iterable[BrokerProcess], timeout: float = 20.0) -> None:
    """Every node sees every node up (``/api/nodes``): nodes started together register in
    any order, and placements made before a node is seen leave it out (a stream's
    partitions are spread over the nodes up at its declare)."""
    group = list(procs)
    names = {proc.node_name for proc in group}
    for proc in group:
        poll(lambda p=proc: {n["name"] for n in p.get_json("/api/nodes") if n["running"]} >= names,
             f"{proc.node_name} sees every node up", timeout)


@contextlib.contextmanager
def member_nodes(tmp: Path, etcd: str, names: Iterable[str] = ("n1", "n2", "n3")
                 ) -> Iterator[dict[str, BrokerProcess]]:
    """Nodes ``names`` (by name) of a fresh cluster, started together and each seeing
    every other up before the block (replica sets and partitions go to the nodes up at
    the declare); at the end a node a failed test left paused (SIGSTOP) is resumed, then
    all are stopped together (``stop_all``)."""
    cluster = f"{tmp.name}-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd, cluster) for n in names}
    try:
        start_all(procs.values())
        all_members(procs.values())
        yield procs
    finally:
        for proc in procs.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
        stop_all(procs.values())
