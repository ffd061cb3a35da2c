"""uvicorn inside the broker's event loop.

We bind the socket ourselves so a port in use is a one-line ``StartupError`` (uvicorn
would log and ``sys.exit``), and we keep uvicorn away from signal handling and logging
config: the broker owns SIGINT/SIGTERM and the log format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from smartbroker.management.app import create_app
from smartbroker.management.state import ManagementState

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker
    from smartbroker.config import Config

log = logging.getLogger("smartbroker.management")
SHUTDOWN_TIMEOUT = 3.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the broker handles signals
        yield


class ManagementServer:
    """Serves ``uv_config``'s app on the bound ``sock`` from construction (a task on the
    running loop) until ``stop``; ``prometheus``: the /metrics listener it stops too."""

    def __init__(self, state: ManagementState, uv_config: uvicorn.Config, sock: socket.socket,
                 name: str, prometheus: ManagementServer | None = None) -> None:
        self.state = state
        self.server = _EmbeddedServer(uv_config)
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.prometheus = prometheus
        self.task: asyncio.Task | None = asyncio.get_running_loop().create_task(
            self.server.serve(sockets=[sock]), name=name)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), close the socket."""
        if self.prometheus is not None:
            await self.prometheus.stop()
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), SHUTDOWN_TIMEOUT + 1)
            except (TimeoutError, asyncio.CancelledError):
                self.server.force_exit = True
                self.task.cancel()
                with contextlib.suppress(BaseException):
                    await self.task
            except Exception:  # pragma: no cover - logged, shutdown goes on
                log.exception("management server failed while stopping")
        self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def start_management(broker: Broker, config: Config, amqp_port: int | None = None) -> ManagementServer:
    """Bind the management port and serve the API as a task on the running loop."""
    from smartbroker.server.app import StartupError

    try:
        sock = _bind(config.host, config.management_port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host}:{config.management_port}: "
                           f"{exc.strerror or exc}") from None
    state = ManagementState(broker, amqp_port=amqp_port, http_port=sock.getsockname()[1])
    tls = {} if config.tls_cert is None else {
        "ssl_certfile": str(config.tls_cert),
        "ssl_keyfile": str(config.tls_key) if config.tls_key else None,
        "ssl_ca_certs": str(config.tls_ca) if config.tls_ca else None}
    uv_config = uvicorn.Config(create_app(state), log_config=None, access_log=False,
                               lifespan="off", timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
                               log_level="warning", server_header=False, **tls)
    prometheus = start_prometheus(state, config)
    mgmt = ManagementServer(state, uv_config, sock, "management-http", prometheus)
    log.info("management API listening on %s port %d", config.host, mgmt.port)
    return mgmt


def start_prometheus(state: ManagementState, config: Config) -> ManagementServer | None:
    """RabbitMQ's Prometheus listener (the rabbitmq_prometheus plugin's port, 15692):
    ``GET /metrics`` only, without authentication, so a scraper needs no management
    credentials. Optional: ``--prometheus-port 0`` turns it off, and a port already in
    use is a warning, not a startup failure (the management port serves /metrics too)."""
    if not config.prometheus_port:
        return None
    try:
        sock = _bind(config.host, config.prometheus_port)
    except OSError as exc:
        log.warning("Prometheus metrics not served on %s:%d: %s", config.host,
                    config.prometheus_port, exc.strerror or exc)
        return None
    from fastapi import FastAPI

    from smartbroker.management.metrics import registry_for
    from smartbroker.management.routers.metrics import router

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics_registry = registry_for(state)
    app.include_router(router)
    uv_config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                               timeout_graceful_shutdown=SHUTDOWN_TIMEOUT, log_level="warning",
                               server_header=False)
    running = ManagementServer(state, uv_config, sock, "prometheus-http")
    log.info("Prometheus metrics listening on %s port %d", config.host, running.port)
    return running
