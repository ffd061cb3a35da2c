"""Run the broker: listeners, signal handling and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from smartbroker.broker.core import Broker
from smartbroker.broker.persistence import Persistence
from smartbroker.config import Config
from smartbroker.server.alarms import ResourceMonitor
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher
from smartbroker.server.tls import server_context

log = logging.getLogger("smartbroker")
SHUTDOWN_GRACE = 3.0


class StartupError(Exception):
    """A listener could not start (port in use, bad address): one line, exit code 1."""


async def serve(config: Config, started: asyncio.Event | None = None) -> None:
    broker = Broker(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    persistence = Persistence(config.data_dir, config.fsync)
    persistence.restore(broker)
    broker.persistence = persistence
    loop = asyncio.get_running_loop()
    flusher = Flusher()
    try:
        server = await loop.create_server(lambda: AMQPConnection(broker, flusher),
                                          config.host, config.port, reuse_address=True, backlog=1024)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    tls = server_context(config)
    servers = [server]
    if tls is not None:
        try:
            servers.append(await loop.create_server(lambda: AMQPConnection(broker, flusher),
                                                    config.host, config.tls_port, ssl=tls,
                                                    reuse_address=True, backlog=1024))
        except OSError as exc:
            server.close()
            raise StartupError(f"cannot listen on {config.host}:{config.tls_port} (TLS): "
                               f"{exc.strerror or exc}") from None
        log.info("smartbroker listening for AMQP over TLS on %s port %d", config.host, config.tls_port)
    ports = ", ".join(str(s.getsockname()[1]) for s in server.sockets)
    log.info("smartbroker listening for AMQP on %s port %s (data dir %s)", config.host, ports,
             config.data_dir)
    from smartbroker.management import start_management

    try:
        management = await start_management(broker, config, server.sockets[0].getsockname()[1])
    except BaseException:
        server.close()
        raise
    monitor = ResourceMonitor(broker, config.data_dir)
    monitor.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: closing %d connection(s)", len(broker.connections))
        for srv in servers:
            srv.close()
        await monitor.stop()
        await management.stop()
        for conn in list(broker.connections):
            conn.server_close()
        deadline = loop.time() + SHUTDOWN_GRACE
        while broker.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(broker.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in servers:
            await srv.wait_closed()
        await persistence.aclose(broker)
        log.info("stopped")


def run(config: Config) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
