"""A smartbroker subprocess for the benchmark scripts that start their own broker
(durability, memory, soak, streams): free ports, its own data dir, graceful stop,
kill -9, and the management API for readiness."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from netutil import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic Z3Vlc3Q6Z3Vlc3Q="  # guest:guest


class BrokerProcess:
    def __init__(self, data_dir: Path, log_path: Path | None = None, *,
                 env: dict[str, str] | None = None, tree: Path = ROOT,
                 log_level: str = "info") -> None:
        self.data_dir = data_dir
        self.log_path = log_path or data_dir.parent / "broker.log"
        self.tree = tree  # the checkout to run (soak runs a frozen worktree)
        self.env = {**os.environ, "PYTHONPATH": str(tree), **(env or {})}
        self.log_level = log_level
        self.port, self.mport = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 600.0, wait_api: bool = False) -> float:
        """Start; returns seconds until the AMQP port accepts (and, with ``wait_api``,
        the management API answers)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        log.write(f"\n===== start at {time.strftime('%H:%M:%S')} =====\n".encode())
        log.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--management-port", str(self.mport),
             "--data-dir", str(self.data_dir), "--log-level", self.log_level],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tree,
            start_new_session=True)
        log.close()
        deadline = self.started_at + timeout
        while not port_open(self.port) or (wait_api and not self.api_ready()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} at start; "
                                   f"see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError("broker did not become ready")
            time.sleep(0.005)
        return time.monotonic() - self.started_at

    def api(self, path: str, timeout: float = 2.0) -> dict | list:
        req = urllib.request.Request(f"http://127.0.0.1:{self.mport}{path}",
                                     headers={"Authorization": AUTH})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def api_ready(self) -> bool:
        try:
            self.api("/api/overview", timeout=1.0)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def ready_for_signals(self, timeout: float = 60.0) -> None:
        """The SIGTERM handler is installed once the management API answers."""
        deadline = time.monotonic() + timeout
        while not self.api_ready():
            if time.monotonic() > deadline:
                raise TimeoutError("management API never answered")
            time.sleep(0.02)

    def stop(self, timeout: float = 300.0) -> tuple[float, int | None]:
        """SIGTERM; returns (seconds, exit code), or kill -9 and None after ``timeout``."""
        assert self.proc is not None
        with contextlib.suppress(TimeoutError):  # hung or still starting: SIGTERM anyway
            self.ready_for_signals(min(timeout, 60.0))
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        return time.monotonic() - t0, rc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
