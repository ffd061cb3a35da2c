"""Run the broker: listeners, signal handling and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.broker.persistence import Persistence
from smartbroker.config import Config
from smartbroker.kafka.handlers import Node
from smartbroker.kafka.listener import KafkaListener
from smartbroker.server import fd_limit, gc_tuning
from smartbroker.server.alarms import ResourceMonitor
from smartbroker.server.connection import AMQPConnection
from smartbroker.server.flush import Flusher
from smartbroker.server.tls import server_context

log = logging.getLogger("smartbroker")
SHUTDOWN_GRACE = 3.0


class StartupError(Exception):
    """The broker cannot start (unusable data directory, port in use, bad TLS files): one
    line on stderr and exit code 1, not a traceback the operator has to read."""


def check_data_dir(path: Path) -> None:
    """Create the data directory and prove it writable now, before recovery or a client
    depends on it (a file, a read-only mount, a path under a file)."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"data directory {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data directory {path} is not usable: "
                           f"{exc.strerror or exc}") from None


_TLS_REASONS = {  # OpenSSL's reason codes, in words
    "PEM lib": "not a PEM certificate and key",
    "NO_START_LINE": "not a PEM file",
    "KEY_VALUES_MISMATCH": "the key does not match the certificate",
    "NO_CERTIFICATE_OR_CRL_FOUND": "no certificate in the CA file",
}


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context, with unreadable or mismatched PEM files as a StartupError."""
    try:
        return server_context(config)
    except OSError as exc:  # ssl.SSLError included
        files = ", ".join(str(f) for f in (config.tls_cert, config.tls_key, config.tls_ca) if f)
        reason = getattr(exc, "reason", None)
        if reason is None and "PEM lib" in str(exc):
            reason = "PEM lib"
        why = _TLS_REASONS.get(reason or "", reason) or exc.strerror or str(exc)
        raise StartupError(f"cannot load TLS files ({files}): {why}") from None


async def start_kafka(broker: Broker, config: Config,
                      servers: list[asyncio.Server]) -> KafkaListener | None:
    """The Kafka listeners (``kafka_port`` and ``kafka_tls_port``, 0: none); a port in
    use is the same one-line StartupError as for AMQP, after closing the AMQP ``servers``
    already listening."""
    if not config.kafka_port and not config.kafka_tls_port:
        return None
    tls = tls_context(config) if config.kafka_tls_port else None
    if config.kafka_tls_port and tls is None:
        for srv in servers:
            srv.close()
        raise StartupError("kafka_tls_port needs a TLS certificate (--tls-cert, --tls-key)")
    node = Node(config.kafka_advertised_host, config.kafka_port or config.kafka_tls_port,
                Node.cluster_id_for(str(config.data_dir.resolve())), config.kafka_vhost)
    kafka = KafkaListener(broker, node)
    for port, ctx in ((config.kafka_port, None), (config.kafka_tls_port, tls)):
        if not port:
            continue
        try:
            await kafka.start(config.host, port, ssl=ctx, reuse_port=config.reuse_port)
        except OSError as exc:
            for srv in servers:
                srv.close()
            kafka.close()
            raise StartupError(f"cannot listen on {config.host}:{port} (Kafka"
                               f"{' TLS' if ctx else ''}): {exc.strerror or exc}") from None
    if config.kafka_tls_port:
        log.info("smartbroker listening for Kafka over TLS (SSL, SASL_SSL) on %s port %d",
                 config.host, config.kafka_tls_port)
    if config.kafka_port:
        log.info("smartbroker listening for Kafka on %s port %d (topics: the streams of vhost "
                 "%s)", config.host, config.kafka_port, config.kafka_vhost)
    return kafka


async def join_cluster(config: Config) -> Any:
    """Cluster mode (``--etcd``): etcd answers and the node name is free, before recovery
    touches anything; else one StartupError line. Imported only here, only then."""
    from smartbroker.cluster.node import ClusterError, ClusterNode

    node = ClusterNode(config)
    try:
        await node.connect()
    except ClusterError as exc:
        raise StartupError(str(exc)) from None
    return node


async def cluster_definitions(cluster: Any) -> Any:
    """Cluster mode's definitions: read from etcd (then followed) before the broker
    restores from them; else one StartupError line."""
    from smartbroker.cluster.node import ClusterError

    try:
        return await cluster.open_definitions()
    except ClusterError as exc:
        await cluster.etcd.close()  # not a member yet: nothing else to undo
        raise StartupError(str(exc)) from None


async def serve(config: Config, started: asyncio.Event | None = None,
                tune_gc: bool = False) -> None:
    """Run the broker until SIGTERM/SIGINT. ``tune_gc``: the process is ours alone (the
    CLI), so the collector is tuned for it (server/gc_tuning.py)."""
    check_data_dir(config.data_dir)
    tls = tls_context(config)
    cluster = await join_cluster(config) if config.etcd else None
    try:
        definitions = await cluster_definitions(cluster) if cluster is not None else None
        persistence = Persistence(config.data_dir, config.fsync, definitions,
                                  config.stream_flush_interval_ms)
        broker = Broker(config, persistence)  # restores from it before returning
        if cluster is not None:  # other nodes' definition changes, applied here
            cluster.follow_definitions(broker, definitions)
    except OSError as exc:
        raise StartupError(f"cannot recover from data directory {config.data_dir}: "
                           f"{exc.strerror or exc}"
                           + (f" ({exc.filename})" if exc.filename else "")) from None
    loop = asyncio.get_running_loop()
    flusher = Flusher()
    try:
        server = await loop.create_server(lambda: AMQPConnection(broker, flusher),
                                          config.host, config.port, reuse_address=True, backlog=1024,
                                          reuse_port=config.reuse_port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    servers = [server]
    if tls is not None:
        try:
            servers.append(await loop.create_server(lambda: AMQPConnection(broker, flusher),
                                                    config.host, config.tls_port, ssl=tls,
                                                    reuse_address=True, backlog=1024,
                                                    reuse_port=config.reuse_port))
        except OSError as exc:
            server.close()
            raise StartupError(f"cannot listen on {config.host}:{config.tls_port} (TLS): "
                               f"{exc.strerror or exc}") from None
        log.info("smartbroker listening for AMQP over TLS on %s port %d", config.host, config.tls_port)
    ports = ", ".join(str(s.getsockname()[1]) for s in server.sockets)
    log.info("smartbroker listening for AMQP on %s port %s (data dir %s)", config.host, ports,
             config.data_dir)
    kafka = await start_kafka(broker, config, servers)
    handoff: Any = None  # cluster/handoff.HandoffListener with --workers
    if cluster is not None:  # a member before its API answers, with the ports it serves on
        try:
            kafka_port = config.kafka_port or config.kafka_tls_port  # TLS only: that one
            if kafka is not None and config.kafka_port and config.reuse_port:
                # serve --workers: the shared port bootstraps; each worker is a Kafka
                # broker at a port of its own, so clients reach a partition's leader
                kafka_port = await kafka.start(config.host, 0)
            if config.reuse_port:  # serve --workers: connections move to their queue's worker
                from smartbroker.cluster.handoff import start_handoff

                handoff = await start_handoff(cluster, broker, flusher)
            await start_cluster(cluster, server.sockets[0].getsockname()[1],
                                config.management_port, kafka_port, broker,
                                None if kafka is None else kafka.handlers)
        except BaseException:
            for srv in servers:
                srv.close()
            if kafka is not None:
                kafka.close()
            raise
    from smartbroker.management import start_management

    try:
        management = await start_management(broker, config, server.sockets[0].getsockname()[1])
    except BaseException:
        if cluster is not None:
            await cluster.stop()
        server.close()
        if kafka is not None:
            kafka.close()
        raise
    monitor = ResourceMonitor(broker, config.data_dir)
    monitor.start()
    rates = management.state.rates  # *_details.rate, sampled every collect_statistics_interval
    rates.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if cluster is not None:
        management.state.node = cluster.name
        management.state.cluster = cluster
        from smartbroker.management.clients import attach  # every node's clients listed

        attach(management.state)
    if tune_gc:
        gc_tuning.freeze_startup_state()
    try:
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        if cluster is not None:  # first: the other nodes see this one leave at once
            await cluster.stop()
        if handoff is not None:
            await handoff.close()
        log.info("shutting down: closing %d connection(s)", len(broker.connections))
        for srv in servers:
            srv.close()
        if kafka is not None:
            kafka.close()
        await monitor.stop()
        await rates.stop()
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
        if kafka is not None:
            await kafka.wait_closed()
        await persistence.aclose(broker)
        log.info("stopped")


async def start_cluster(cluster: Any, amqp: int, http: int, kafka: int,
                        broker: Broker | None = None, kafka_handlers: Any = None) -> None:
    from smartbroker.cluster.node import ClusterError

    try:
        await cluster.start(amqp=amqp, http=http, kafka=kafka, broker=broker)
        if kafka_handlers is not None:  # Metadata names every node and each topic's leader
            await cluster.serve_kafka(kafka_handlers, broker)
    except ClusterError as exc:
        raise StartupError(str(exc)) from None


def run(config: Config) -> None:
    fd_limit.raise_to_hard()  # before the stores size their open-file caches from it
    gc_tuning.tune_for_serving()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        asyncio.run(serve(config, tune_gc=True))
    else:
        uvloop.run(serve(config, tune_gc=True))
