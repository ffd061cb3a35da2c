"""Start a smartbroker subprocess on free loopback ports, wait until it serves, stop it.

The one copy used by the test fixtures, the benchmark scripts and ``smartbroker demo``:
each needs a broker it owns (its own data dir and ports) that it can stop gracefully,
``kill -9`` and restart on the same ports. Readiness is polled (AMQP port, then an HTTP
answer from the management API), never slept for. Standard library only, so that neither
the package nor the benchmarks depend on a test library.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False  # loopback, and test brokers use their own CA
_INSECURE.verify_mode = ssl.CERT_NONE
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}),  # loopback: no proxy
                                      urllib.request.HTTPSHandler(context=_INSECURE))
_POLL = 0.01  # seconds between readiness probes

_PORT_RETRIES = 3  # a picked port taken before the broker binds it: pick again


def free_port() -> int:
    """A loopback port nobody listens on right now (the broker binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def hold_port(port: int = 0) -> socket.socket | None:
    """A socket bound to ``port`` (0: one the kernel picks) that never listens, with
    SO_REUSEADDR. While it is open the kernel gives the port to no bind(0) or connect()
    of any process, yet a broker still listens on it, since its listeners all set
    SO_REUSEADDR too. None when someone listens there already."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        return None
    return sock


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()


class PortHolds:
    """The ports of a restartable child (a broker, etcd), held (``hold_port``) for as
    long as this object lives: a port freed by a kill -9 or a stop is not handed to
    another process's bind(0) or connection before the restart binds it again (that
    happened: "address already in use" on a restart while other tests ran)."""

    def __init__(self) -> None:
        self._socks: list[socket.socket] = []
        weakref.finalize(self, _close_all, self._socks)

    def take(self, port: int | None = None) -> int:
        """``port`` (None: a free one), held from now on."""
        sock = hold_port(port or 0)
        if sock is None:  # the caller's port, with a listener on it: the child will say so
            if not port:
                raise OSError("the kernel gave no free loopback port")
            return port
        self._socks.append(sock)
        return sock.getsockname()[1]

    def release(self) -> None:
        _close_all(self._socks)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, proc: subprocess.Popen | None,
                  timeout: float = 20.0) -> None:
    """Block until ``port`` accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited early with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"broker did not listen on {host}:{port} within {timeout}s")
        time.sleep(_POLL)


class BrokerProcess:
    """One ``python -m smartbroker serve`` child: restartable (same ports and data dir)
    and killable, with its log in a file next to the data dir.

    ``--prometheus-port 0`` and ``--kafka-port 0`` are passed unless ``extra_args`` names
    a port (or ``kafka=True`` asks for a free Kafka port, ``kafka_port``), so that many
    brokers run side by side. ``etcd`` starts a cluster node (``node_name``,
    ``cluster_name``, a free ``cluster_port``). ``tree`` runs the ``smartbroker`` of another checkout
    (``PYTHONPATH`` and cwd), as the soak test does with a frozen worktree.

    Its ports are held (``PortHolds``) for as long as this object lives.
    """

    def __init__(self, data_dir: Path, *, log_path: Path | None = None,
                 port: int | None = None, management_port: int | None = None,
                 extra_args: Iterable[str] = (), env: Mapping[str, str] | None = None,
                 log_level: str = "info", tree: Path | None = None,
                 new_session: bool = False, kafka: bool = False,
                 etcd: str | None = None, node_name: str | None = None,
                 cluster_name: str | None = None, host: str = HOST,
                 listen_host: str | None = None, wrapper: Iterable[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        # where clients reach it, what it binds (--host; default ``host``), and a command
        # it runs under: tests/cluster/netns.py runs nodes in network namespaces
        self._host, self.listen_host, self.wrapper = host, listen_host or host, list(wrapper)
        # ports we picked ourselves may be taken by someone else before the broker binds
        # them (tests run in parallel): start() then picks again, see _PORT_RETRIES
        self._own_ports = port is None and management_port is None
        self._ports = PortHolds()
        self.port = self._ports.take(port)
        self.management_port = self._ports.take(management_port)
        self.kafka_port: int | None = self._ports.take() if kafka else None  # None: Kafka off
        # cluster mode (docs/cluster.md): with ``etcd``, a node named ``node_name`` of
        # ``cluster_name`` with a cluster port of its own
        self.etcd, self.node_name, self.cluster_name = etcd, node_name, cluster_name
        self.cluster_port: int | None = self._ports.take() if etcd else None
        self.log_path = log_path or self.data_dir.parent / f"broker-{self.port}.log"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_level = log_level
        self.tree = tree
        self.new_session = new_session  # a Ctrl-C of the caller does not reach the broker
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.startup_seconds = 0.0  # start() until the AMQP port (and API) answered
        self.stop_seconds = 0.0  # SIGTERM until exit (or SIGKILL), of the last stop()
        self._serving = False  # the management API answered: the SIGTERM handler is in
        self._https = False  # the API speaks HTTPS when TLS is configured (flag, env or file)

    @property
    def host(self) -> str:
        return self._host

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` for Kafka clients (the listener is up once the API answers: it
        starts before the management API)."""
        assert self.kafka_port is not None, "started without kafka=True"
        return f"{self.host}:{self.kafka_port}"

    @property
    def api(self) -> str:
        """The management API's base URL with the default credentials."""
        return f"http://guest:guest@{self.host}:{self.management_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the broker was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        named = {a.split("=")[0] for a in self.extra_args}
        # another checkout (``tree``) may predate --kafka-port: _start_once sets it by
        # environment there, which an older Config ignores
        kafka = () if "--kafka-port" in named or self.tree is not None \
            else ("--kafka-port", str(self.kafka_port or 0))
        return [*self.wrapper, sys.executable, "-m", "smartbroker", "serve",
                "--host", self.listen_host,
                "--port", str(self.port), "--management-port", str(self.management_port),
                "--data-dir", str(self.data_dir), "--log-level", self.log_level,
                *(() if "--prometheus-port" in named else ("--prometheus-port", "0")),
                *kafka, *self._cluster_args(), *self.extra_args]

    def _cluster_args(self) -> list[str]:
        if not self.etcd:
            return []
        args = ["--etcd", self.etcd, "--cluster-port", str(self.cluster_port)]
        if self.node_name:
            args += ["--node-name", self.node_name]
        if self.cluster_name:
            args += ["--cluster-name", self.cluster_name]
        return args

    def start(self, timeout: float = 60.0, wait_api: bool = True) -> BrokerProcess:
        """Start and wait until AMQP accepts connections (recovery is done by then) and,
        with ``wait_api``, the management API answers. ``startup_seconds`` says how long.
        On a first start with ports we picked, a port taken meanwhile by another process
        (the broker exits with "cannot listen on") means new ports and another try."""
        for attempt in range(_PORT_RETRIES):
            try:
                self._start_once(timeout, wait_api)
                self._own_ports = False  # a restart keeps these ports
                return self
            except RuntimeError:
                lost_race = self._own_ports and self.proc is not None and self.started_at \
                    and "cannot listen on" in self.log().rsplit("===== start at", 1)[-1]
                if not lost_race or attempt == _PORT_RETRIES - 1:
                    raise
                self._ports.release()
                self.port, self.management_port = self._ports.take(), self._ports.take()
                if self.kafka_port is not None:
                    self.kafka_port = self._ports.take()
                if self.cluster_port is not None:
                    self.cluster_port = self._ports.take()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float, wait_api: bool) -> BrokerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
            if "SMARTBROKER_KAFKA_PORT" not in self.env:
                env["SMARTBROKER_KAFKA_PORT"] = str(self.kafka_port or 0)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"===== start at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self._serving = False
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.tree,
                                         start_new_session=self.new_session)
        try:
            wait_for_port(self.host, self.port, self.proc, timeout)
            if wait_api:
                self.wait_serving(self.started_at + timeout - time.monotonic())
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise type(exc)(f"{exc}; see {self.log_path}") from None
        self.startup_seconds = time.monotonic() - self.started_at
        return self

    def serving(self) -> bool:
        """Whether the management API answers (any status: 401 is an answer too)."""
        if not self._serving:
            try:
                self._request("/api/healthchecks/node", timeout=1.0)
                self._serving = True
            except urllib.error.HTTPError:
                self._serving = True
            except (OSError, ValueError, http.client.HTTPException) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if not isinstance(reason, ConnectionRefusedError | TimeoutError):
                    self._https = not self._https  # it accepted but did not answer: the other one
        return self._serving

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Until the management API answers; by then the SIGTERM handler is installed."""
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"broker exited early with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the management API did not answer")
            time.sleep(_POLL)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful stop: SIGTERM once the handler is installed (the API answered), then
        SIGKILL after ``timeout``. Returns the exit code (negative for a signal), None if
        it was never started."""
        if self.proc is None:
            return None
        if self.alive():
            # a SIGTERM before the handler is in would not be a graceful stop; a broker
            # that hangs or dies while starting is terminated anyway
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.wait_serving(min(timeout, 60.0))
            t0 = time.monotonic()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stop_seconds = time.monotonic() - t0
        self._serving = False
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no shutdown code runs in the broker."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        self._serving = False

    def restart(self, timeout: float = 10.0) -> BrokerProcess:
        self.stop(timeout)
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tracebacks(self) -> list[str]:
        """Each traceback in the log, with the line before it (what was being logged)."""
        lines = self.log().splitlines()
        return ["\n".join(lines[max(i - 1, 0):i + 25]) for i, line in enumerate(lines)
                if line.startswith("Traceback (most recent call last)")]

    def get_json(self, path: str, timeout: float = 2.0) -> Any:
        """GET ``path`` (``/api/...``) from the management API as guest."""
        return json.loads(self._request(path, timeout))

    def _request(self, path: str, timeout: float) -> bytes:
        scheme = "https" if self._https else "http"
        req = urllib.request.Request(f"{scheme}://{self.host}:{self.management_port}{path}",
                                     headers={"Authorization": _AUTH})
        with _DIRECT.open(req, timeout=timeout) as resp:
            return resp.read()

    def rss(self) -> int | None:
        """Resident memory of the broker in bytes (Linux), None when unknown."""
        if not self.alive():
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None
