"""Starting and stopping a test cluster's broker processes together, as a cluster is
started and stopped in production: the joins and leaves overlap (a bug there shows), and
a fixture waits for the slowest node instead of the sum of them."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from smartbroker.launcher import BrokerProcess
from tests.conftest import assert_clean_log


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
