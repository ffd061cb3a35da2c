"""smartbroker.launcher: the broker subprocess the tests, benchmarks and the demo share."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from smartbroker.launcher import BrokerProcess, free_port, port_open, wait_for_port


def test_command_turns_prometheus_off_unless_a_port_is_named(tmp_path: Path) -> None:
    cmd = BrokerProcess(tmp_path / "data").command()
    assert cmd[cmd.index("--prometheus-port") + 1] == "0"
    for extra in (["--prometheus-port", "9999"], ["--prometheus-port=9999"]):
        cmd = BrokerProcess(tmp_path / "data", extra_args=extra).command()
        assert cmd[-len(extra):] == extra
        assert "--prometheus-port" not in cmd[:-len(extra)]


def test_command_turns_kafka_off_unless_asked_or_named(tmp_path: Path) -> None:
    proc = BrokerProcess(tmp_path / "data")
    cmd = proc.command()
    assert proc.kafka_port is None and cmd[cmd.index("--kafka-port") + 1] == "0"
    proc = BrokerProcess(tmp_path / "data", kafka=True)
    cmd = proc.command()
    assert proc.kafka_port and cmd[cmd.index("--kafka-port") + 1] == str(proc.kafka_port)
    assert proc.kafka_bootstrap == f"127.0.0.1:{proc.kafka_port}"
    for extra in (["--kafka-port", "9999"], ["--kafka-port=9999"]):
        cmd = BrokerProcess(tmp_path / "data", extra_args=extra).command()
        assert cmd[-len(extra):] == extra
        assert "--kafka-port" not in cmd[:-len(extra)]
    # another checkout may not know the flag: there it goes by environment
    assert "--kafka-port" not in BrokerProcess(tmp_path / "data", tree=tmp_path).command()


def test_a_broker_from_another_tree_runs_without_kafka(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = BrokerProcess(tmp_path / "data", tree=root).start()
    try:
        assert "listening for AMQP" in proc.log()
        assert "listening for Kafka" not in proc.log()
    finally:
        proc.stop()


def test_wait_for_port_gives_up_at_its_deadline() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, None, timeout=0.2)
    assert time.monotonic() - started < 5


def test_start_stop_kill_restart(tmp_path: Path) -> None:
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        assert proc.serving() and port_open(proc.host, proc.port)
        assert proc.get_json("/api/overview")["product_name"]
        assert (proc.rss() or 0) > 0
        ports = proc.port, proc.management_port
        proc.kill()
        assert not proc.alive() and proc.proc is not None
        assert proc.proc.returncode == -signal.SIGKILL
        for port in ports:  # held for the restart: no one else's bind (nor bind(0)) gets it
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        proc.start()  # same ports and data dir after kill -9
        assert (proc.port, proc.management_port) == ports and proc.serving()
        assert proc.stop() == 0
        assert "stopped" in proc.log() and not proc.tracebacks()
        assert proc.restart().alive()
    finally:
        proc.stop()


def test_a_broker_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:  # its AMQP port is in use: serve exits with an error
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = BrokerProcess(tmp_path / "data", port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=str(proc.log_path)):
            proc.start(timeout=30)
    assert not proc.alive()
    assert "cannot listen" in proc.log()


def test_a_picked_port_taken_before_the_broker_binds_it_means_new_ports(tmp_path: Path) -> None:
    """The launcher holds the ports it picks against bind(0) and plain binds, not against
    a listener that sets SO_REUSEADDR (another broker given that port): then it picks again
    instead of failing."""
    proc = BrokerProcess(tmp_path / "data")
    taken = proc.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        proc.start()
    try:
        assert proc.port != taken and proc.serving()
        assert "cannot listen on" in proc.log()
        ports = proc.port, proc.management_port
        proc.restart()
        assert (proc.port, proc.management_port) == ports
    finally:
        proc.stop()


def test_ports_given_by_the_caller_are_not_replaced(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        proc = BrokerProcess(tmp_path / "data", port=taken, management_port=free_port())
        with pytest.raises(RuntimeError, match="exited early"):
            proc.start()
    assert proc.port == taken
