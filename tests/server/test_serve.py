"""`smartbroker serve` as an operator sees it: flags, env, config file, signals, port clash."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.conftest import BrokerProcess, free_port, wait_for_port

pytestmark = pytest.mark.extension


def test_sigterm_closes_clients_with_320_and_exits_0(tmp_path: Path) -> None:
    proc = BrokerProcess(data_dir=tmp_path / "data").start()
    conn = pika.BlockingConnection(pika.URLParameters(proc.url))
    closed: list[pika.exceptions.ConnectionClosedByBroker] = []
    try:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=10) == 0
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            conn.process_data_events(time_limit=5)
            conn.channel()
        closed.append(info.value)
    finally:
        proc.stop()
    assert closed[0].reply_code == 320
    assert "CONNECTION_FORCED" in closed[0].reply_text


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--management-port", str(free_port()), "--kafka-port", "0",
             "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(port) in lines[0]
    assert "Traceback" not in result.stderr


def test_env_and_config_file_and_flags_precedence(tmp_path: Path) -> None:
    """defaults < TOML file < SMARTBROKER_* env < flags: the broker listens where told."""
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "smartbroker.toml"
    config.write_text(f'port = {file_port}\nhost = "127.0.0.1"\nlog-level = "warning"\n')
    import os

    env = {**os.environ, "SMARTBROKER_PORT": str(env_port),
           "SMARTBROKER_MANAGEMENT_PORT": str(free_port())}
    proc = subprocess.Popen([sys.executable, "-m", "smartbroker", "serve", "--config", str(config),
                             "--kafka-port", "0", "--data-dir", str(tmp_path / "d")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", env_port, proc)
    finally:
        proc.terminate()
        proc.wait(10)
    flag_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smartbroker", "serve", "--config", str(config),
                             "--port", str(flag_port), "--kafka-port", "0",
                             "--data-dir", str(tmp_path / "d")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", flag_port, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "smartbroker", "serve", "--port", "99999",
                             "--kafka-port", "0", "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "port" in result.stderr


def test_other_clients_unaffected_by_a_dying_one(own_broker: BrokerProcess) -> None:
    """A client that drops mid-body leaves the broker serving everyone else."""
    good = pika.BlockingConnection(pika.URLParameters(own_broker.url))
    ch = good.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    bad = socket.create_connection(("127.0.0.1", own_broker.port))
    bad.sendall(b"AMQP\x00\x00\x09\x01")
    bad.recv(4096)  # connection.start
    bad.sendall(b"\x01\x00\x00\x00\x00\x01")  # half a frame, then gone
    bad.close()
    ch.basic_publish("", q, b"still here")
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"still here"
    good.close()
