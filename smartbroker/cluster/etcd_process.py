"""Start a real etcd on free loopback ports in a directory, wait until healthy, stop it.

Used by the cluster tests (a session fixture) and by ``serve --workers`` when no
``--etcd`` is given. One single-member etcd, its data and log in the given directory.
Readiness is polled from etcd's ``/health`` endpoint, never slept for. Standard library
only, like ``smartbroker.launcher``, so that starting etcd needs no client library.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from smartbroker.launcher import HOST, PortHolds, port_open

ETCD_BINARY = "etcd"  # Debian's etcd-server (3.4.23 on bookworm) installs /usr/bin/etcd
_POLL = 0.02  # seconds between health probes
_PORT_RETRIES = 3  # a picked port taken before etcd binds it: pick again
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def etcd_binary() -> str | None:
    """The path of the ``etcd`` executable, or None when it is not installed."""
    return shutil.which(ETCD_BINARY)


class EtcdProcess:
    """One ``etcd`` child: a single-member cluster on loopback, restartable on the same
    ports (held while this object lives: ``PortHolds``; etcd's listeners set SO_REUSEADDR)
    and data directory. ``endpoint`` is what ``--etcd`` and the client take."""

    def __init__(self, directory: Path, *, name: str = "smartbroker-etcd",
                 host: str = HOST, client_port: int | None = None,
                 peer_port: int | None = None, binary: str | None = None,
                 new_session: bool = False) -> None:
        self.directory = Path(directory)
        self.name = name
        self.host = host
        self._own_ports = client_port is None and peer_port is None
        self._ports = PortHolds()
        self.client_port = self._ports.take(client_port)
        self.peer_port = self._ports.take(peer_port)
        self.binary = binary or etcd_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.new_session = new_session  # a Ctrl-C of the caller does not reach etcd

    @property
    def data_dir(self) -> Path:
        return self.directory / "etcd-data"

    @property
    def log_path(self) -> Path:
        return self.directory / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        if self.binary is None:
            raise FileNotFoundError("no etcd binary on PATH (Debian: apt-get install etcd-server)")
        peer = f"http://{self.host}:{self.peer_port}"
        return [self.binary, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--initial-cluster-state", "new", "--log-level", "warn",
                # etcd 3.4 keeps every revision unless told: a long-lived serve --workers
                # would fill its 2 GiB quota with old declares (watches re-read after it)
                "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> EtcdProcess:
        """Start and wait until ``/health`` says true. On a first start with ports we
        picked, a port taken meanwhile (etcd exits at once) means new ports and a retry."""
        for attempt in range(_PORT_RETRIES):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                if not self._own_ports or attempt == _PORT_RETRIES - 1:
                    raise
                self._ports.release()
                self.client_port, self.peer_port = self._ports.take(), self._ports.take()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> EtcdProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = self.command()
        if port_open(self.host, self.client_port):  # else the other one would look healthy
            raise RuntimeError(f"etcd port {self.client_port} is in use; see {self.log_path}")
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"===== start at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=self.new_session)
        try:
            self.wait_healthy(timeout)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise type(exc)(f"{exc}; see {self.log_path}") from None
        self._own_ports = False  # a restart keeps these ports
        return self

    def healthy(self) -> bool:
        """Whether etcd answers ``/health`` with ``{"health": "true"}`` (it has a leader)."""
        try:
            with _DIRECT.open(f"{self.endpoint}/health", timeout=1.0) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited early with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd did not become healthy within {timeout}s")
            time.sleep(_POLL)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``. The exit code, None if never started."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 (what a crashed etcd looks like to its clients)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
