"""``serve --workers N``: N nodes of one cluster on this machine, sharing its ports.

Python runs one core per process, so every core of a machine means one node per core.
The supervisor starts an etcd of its own (in the data directory) unless ``--etcd`` is
given, then N ``smartbroker serve`` children: each with SO_REUSEPORT on the AMQP and Kafka
ports (the kernel spreads connections over them), its own data subdirectory, node name
(``<name>-w<i>``) and cluster port. Worker 0 serves the management port and Prometheus;
the others serve their API on a private port picked here (``/api/nodes`` lists it), which
the supervisor polls to know they are up. It stays small: start, watch, stop.

A worker that dies after it was serving is started again (its durable queues come back
with it); one that fails while starting stops everything with its exit code, as its error
is a setting's. RabbitMQ leaves restarting a node to the service manager; here the
supervisor is that manager. SIGTERM or SIGINT stops the workers (in parallel), then etcd.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smartbroker.config import Config
from smartbroker.launcher import free_port

log = logging.getLogger("smartbroker.workers")

STOP_TIMEOUT = 15.0  # seconds a worker has to stop after SIGTERM before SIGKILL
START_TIMEOUT = 120.0  # recovery of a large data directory takes a while
_POLL = 0.05
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False  # our own children on loopback
_INSECURE.verify_mode = ssl.CERT_NONE
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                      urllib.request.HTTPSHandler(context=_INSECURE))


class WorkersError(RuntimeError):
    """A one-line reason ``serve --workers`` cannot run (printed as ``error: ...``)."""


def worker_count(value: str) -> int:
    """``auto`` (one per core) or a positive integer; ValueError with the reason."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--workers takes a number or 'auto', not {value!r}") from None
    if not 1 <= count <= 256:
        raise ValueError(f"--workers must be between 1 and 256, not {count}")
    return count


class Worker:
    """One node: its command line, its process, and where its API answers."""

    def __init__(self, index: int, command: list[str], env: Mapping[str, str],
                 api: str) -> None:
        self.name = f"w{index}"
        self.command, self.env, self.api = command, dict(env), api
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_at: float | None = None  # monotonic time it first answered, this run

    def start(self) -> None:
        # its own session: a terminal's Ctrl-C reaches the supervisor, which stops the
        # workers in order (etcd last); stderr is copied to ours with the worker's name
        self.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ready_at = None
        threading.Thread(target=_copy_lines, args=(self.proc.stdout, f"[{self.name}] "),
                         daemon=True).start()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def answers(self) -> bool:
        """Whether its management API answers (any status): it is a member by then."""
        try:
            with _DIRECT.open(f"{self.api}/api/healthchecks/node", timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ValueError):
            return False

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not stop within %.0fs: killed", self.name, STOP_TIMEOUT)
            self.proc.kill()
            self.proc.wait()


def _copy_lines(stream: Any, prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(prefix + line.decode(errors="replace"))
        sys.stderr.flush()
    stream.close()


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Supervisor:
    """Starts etcd (if needed) and the workers, restarts a worker that dies, stops all."""

    def __init__(self, cfg: Config, flags: Mapping[str, Any], config_file: Path | None,
                 count: int) -> None:
        self.cfg, self.count = cfg, count
        self.etcd: Any = None  # EtcdProcess when we run our own
        self.stop_event = threading.Event()
        base = cfg.node_name or f"smartbroker@{platform.node() or 'localhost'}"
        self.names = [f"{base}-w{i}" for i in range(count)]
        # the shared ports must be known before the first worker binds them
        self.port = cfg.port or free_port()
        self.kafka_port = cfg.kafka_port
        # the user's flags reach the workers as SMARTBROKER_* variables (flags > env >
        # file holds: they were flags); per-worker settings are flags, the strongest
        env = {**os.environ, "SMARTBROKER_REUSE_PORT": "true"}
        for key, value in flags.items():
            env[f"SMARTBROKER_{key.upper()}"] = ",".join(value) if isinstance(value, list) \
                else str(value)
        self.env = env
        self.config_file = config_file
        self.flags = flags

    def _command(self, index: int, etcd: str) -> tuple[list[str], str]:
        cfg = self.cfg
        first = index == 0
        http_port = cfg.management_port if first else free_port()
        if first and not http_port:
            http_port = free_port()
        cluster_port = self.flags.get("cluster_port") or 0
        args = [sys.executable, "-m", "smartbroker", "serve",
                "--port", str(self.port), "--kafka-port", str(self.kafka_port),
                "--management-port", str(http_port),
                "--prometheus-port", str(cfg.prometheus_port if first else 0),
                "--data-dir", str(cfg.data_dir / f"w{index}"),
                "--node-name", self.names[index], "--etcd", etcd,
                "--cluster-port", str(cluster_port + index if cluster_port else 0)]
        if self.etcd is not None and not cfg.advertise_host:
            args += ["--advertise-host", "127.0.0.1"]  # our etcd is loopback-only: so are we
        if self.config_file is not None:
            args += ["--config", str(self.config_file)]
        scheme = "https" if cfg.tls_cert is not None else "http"
        return args, f"{scheme}://{_probe_host(cfg.host)}:{http_port}"

    def _start_etcd(self) -> str:
        if self.cfg.etcd:
            return ",".join(self.cfg.etcd)
        from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary

        if etcd_binary() is None:
            raise WorkersError("serve --workers needs etcd: no 'etcd' binary on PATH "
                               "(Debian: apt-get install etcd-server), or give --etcd URL")
        self.etcd = EtcdProcess(self.cfg.data_dir / "etcd", new_session=True)
        try:
            self.etcd.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise WorkersError(f"cannot start etcd: {exc}") from None
        log.info("etcd serving the workers on %s (data in %s)", self.etcd.endpoint,
                 self.etcd.directory)
        return str(self.etcd.endpoint)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code (0 after a clean stop)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        workers: list[Worker] = []
        try:
            etcd = self._start_etcd()
            for i in range(self.count):
                command, api = self._command(i, etcd)
                workers.append(Worker(i, command, self.env, api))
            for worker in workers:
                worker.start()
            return self._watch(workers)
        finally:
            self._stop(workers)

    def _watch(self, workers: list[Worker]) -> int:
        started = time.monotonic()
        announced = False
        while not self.stop_event.wait(_POLL if not announced else 0.5):
            for worker in workers:
                code = worker.exited()
                if code is not None:
                    if worker.ready_at is None:  # a setting, a port in use: say so, stop
                        log.error("worker %s exited with code %s while starting", worker.name,
                                  code)
                        return code or 1
                    log.warning("worker %s exited with code %s: starting it again",
                                worker.name, code)
                    worker.start()
                elif worker.ready_at is None and worker.answers():
                    worker.ready_at = time.monotonic()
            if not announced and all(w.ready_at is not None for w in workers):
                announced = True
                log.info("%d workers serving AMQP on %s port %d (management: %s)",
                         len(workers), self.cfg.host, self.port, workers[0].api)
            if not announced and time.monotonic() - started > START_TIMEOUT:
                log.error("the workers did not all start within %.0fs", START_TIMEOUT)
                return 1
            if self.etcd is not None and not self.etcd.alive():
                log.warning("etcd exited (see %s): starting it again", self.etcd.log_path)
                try:
                    self.etcd.start()
                except (OSError, RuntimeError, TimeoutError) as exc:
                    log.error("cannot restart etcd: %s", exc)
                    return 1
        return 0

    def _stop(self, workers: list[Worker]) -> None:
        for worker in workers:
            worker.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in workers:
            worker.wait(deadline)
        if self.etcd is not None:
            self.etcd.stop()


def run_workers(cfg: Config, flags: Mapping[str, Any], config_file: Path | None,
                count: int) -> int:
    """The ``serve --workers`` entry point: the exit code."""
    return Supervisor(cfg, flags, config_file, count).run()
