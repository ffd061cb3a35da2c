"""A ``smartbroker serve --workers 2`` supervisor as a test's subprocess (test_workers.py,
test_handoff_workers.py, test_handoff_tls.py): started on ports held across its restarts,
waited for until both workers serve, its management API asked, stopped with SIGTERM."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from smartbroker.launcher import PortHolds

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Workers:
    """A running ``serve --workers 2``: its process, ports and log."""

    def __init__(self, tmp: Path) -> None:
        self._ports = PortHolds()  # kept for a restart while stopped
        self.port, self.http = self._ports.take(), self._ports.take()
        self.log_path = tmp / "workers.log"
        self.data = tmp / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> Workers:
        mark = len(self.log()) if self.log_path.exists() else 0  # a restart appends
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "smartbroker", "serve", "--workers", "2",
                 "--host", "127.0.0.1", "--port", str(self.port),
                 "--management-port", str(self.http), "--prometheus-port", "0",
                 "--kafka-port", "0", "--data-dir", str(self.data)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while "2 workers serving AMQP" not in self.log()[mark:]:  # once both answer
            assert self.proc.poll() is None, f"serve --workers exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"not serving in {timeout}s:\n{self.log()}"
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, port: int | None = None) -> object:
        req = urllib.request.Request(f"http://127.0.0.1:{port or self.http}{path}",
                                     headers=AUTH)
        with DIRECT.open(req, timeout=5) as resp:
            return json.loads(resp.read())

    def apis(self) -> dict[str, int]:
        """Each node's name and management port (worker 0 serves the shared one)."""
        nodes = self.get("/api/nodes")
        assert isinstance(nodes, list)
        return {n["name"]: n.get("http_port", self.http) for n in nodes if n["running"]}

    def descendants(self) -> set[int]:
        """The supervisor's child processes (etcd and the workers), from /proc."""
        assert self.proc is not None
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    children.add(int(entry.name))
        return children

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
