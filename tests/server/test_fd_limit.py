"""A broker started under a low soft descriptor limit raises it to the hard limit.

Shells and containers commonly hand out a soft limit of 1,024 (here 256) under a much
higher hard one; the broker raises it itself, as Go programs do, so connections and
segment files are not refused for a limit it was allowed to lift. ``/api/nodes`` shows
it as ``fd_total``, as RabbitMQ's does."""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.server.fd_limit import CEILING


@pytest.mark.extension
def test_soft_descriptor_limit_raised_to_hard(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if hard <= 256:
        pytest.skip(f"the hard descriptor limit here is {hard}: nothing to raise")
    broker = BrokerProcess(tmp_path / "data", wrapper=["prlimit", f"--nofile=256:{hard}"])
    broker.start()
    try:
        node = broker.get_json("/api/nodes")[0]
        assert node["fd_total"] == hard
    finally:
        broker.stop()
