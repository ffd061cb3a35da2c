"""The management server inside the broker process: port in use, clean shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest


@pytest.mark.extension
def test_management_port_in_use_is_one_line_exit_1(tmp_path) -> None:
    with socket.socket() as busy, socket.socket() as amqp:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        amqp.bind(("127.0.0.1", 0))
        amqp_port = amqp.getsockname()[1]
        amqp.close()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
             "--port", str(amqp_port), "--management-port", str(port), "--kafka-port", "0",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


@pytest.mark.extension
def test_clean_shutdown_with_open_http_connection(own_broker) -> None:
    import time

    deadline = time.monotonic() + 20
    while True:  # HTTP opens just after the AMQP port the fixture waited for
        try:
            socket.create_connection(("127.0.0.1", own_broker.management_port), 0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{own_broker.management_port}",
                      auth=("guest", "guest")) as client:
        assert client.get("/api/overview").status_code == 200  # keep-alive stays open
        assert own_broker.stop(timeout=15) == 0
    log = own_broker.log()
    assert "Traceback" not in log
    assert "stopped" in log


@pytest.mark.extension
def test_prometheus_port_serves_metrics_without_login(tmp_path) -> None:
    """RabbitMQ's Prometheus plugin listens on its own port (15692) and asks no credentials;
    a port already taken there only costs the listener, never the broker."""
    from tests.conftest import BrokerProcess, assert_clean_log, free_port

    metrics_port = free_port()
    proc = BrokerProcess(data_dir=tmp_path / "a",
                         extra_args=["--prometheus-port", str(metrics_port)]).start()
    try:
        reply = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert reply.status_code == 200
        assert "\nrabbitmq_build_info{" in reply.text and "\nrabbitmq_connections " in reply.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/api/overview",
                         timeout=10).status_code == 404  # metrics only: no API there
        second = BrokerProcess(data_dir=tmp_path / "b",
                               extra_args=["--prometheus-port", str(metrics_port)]).start()
        try:
            assert httpx.get(f"http://127.0.0.1:{second.management_port}/api/overview",
                             auth=("guest", "guest"), timeout=10).status_code == 200
            assert f"Prometheus metrics not served on 127.0.0.1:{metrics_port}" in second.log()
        finally:
            second.stop()
        assert_clean_log(second)
    finally:
        proc.stop()
    assert_clean_log(proc)
