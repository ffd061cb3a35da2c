"""guest may log in from loopback only (RabbitMQ's loopback_users), configurable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.conftest import free_port, non_loopback_address, wait_for_port

pytestmark = pytest.mark.extension


def _serve(tmp_path: Path, *extra_env: tuple[str, str]) -> tuple[subprocess.Popen, int]:
    import os

    port = free_port()
    env = {**os.environ, **dict(extra_env)}
    proc = subprocess.Popen([sys.executable, "-m", "smartbroker", "serve", "--host", "0.0.0.0",
                             "--port", str(port), "--management-port", str(free_port()),
                             "--kafka-port", "0", "--data-dir", str(tmp_path / "d")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, proc)
    return proc, port


def test_guest_refused_from_a_remote_address_but_fine_on_loopback(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    proc, port = _serve(tmp_path)
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{address}:{port}/"))
        local = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/"))
        local.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_loopback_users_is_configurable(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    proc, port = _serve(tmp_path, ("SMARTBROKER_LOOPBACK_USERS", "[]"))
    try:
        remote = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{address}:{port}/"))
        remote.close()
    finally:
        proc.terminate()
        proc.wait(10)
