"""The Kafka listener: one ``asyncio.BufferedProtocol`` per connection around the sans-IO
``KafkaConnection`` (the socket reads into the connection's buffers: one copy of a
Produce's bytes before kafka-python decodes it, not three), and ``KafkaListener`` to start
and stop the server.

Requests are answered inside ``data_received``, so the responses of one read leave in one
``transport.write``; a handler may instead return a future (a Fetch waiting for data), whose
response is written when it completes, after the ones before it (``KafkaConnection`` keeps
request order). A request the client sent badly closes the connection with one log line
(Kafka does the same), never a traceback.

Security (issue 14 part 5): a client acts as the default user without SASL when that user's
loopback rule allows its address and ``kafka_sasl_required`` is off; otherwise only
ApiVersions and SASL are served until it authenticates (``KafkaConnection.pre_auth``), as on
Kafka's SASL_PLAINTEXT/SASL_SSL listeners. A SASL refusal is answered, then the connection
closes. Each connection is in ``broker.connections`` (``connections.py``) for the
management API.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any

from smartbroker.broker.access import may_connect_from
from smartbroker.broker.core import Broker
from smartbroker.kafka import allocator, codec
from smartbroker.kafka.codec import Request
from smartbroker.kafka.connections import KafkaConnectionRecord
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node, Session
from smartbroker.kafka.produce import NO_RESPONSE
from smartbroker.kafka.protocol import NEED_DATA, KafkaConnection, KafkaProtocolError, SaslToken
from smartbroker.kafka.sasl import SASL_AUTHENTICATE, SASL_HANDSHAKE, SaslFailure
from smartbroker.kafka.stats import KafkaStats, register

log = logging.getLogger("smartbroker.kafka")
MAX_IN_FLIGHT = 64  # stop reading while this many responses are owed (Kafka mutes a channel)
MAX_ANSWERED = 1 << 20  # answer bytes per pass; the rest of a pipeline waits (bounded memory)
# Kafka's connection.failed.authentication.delay.ms: a refused login's socket closes this
# much later, so a client retrying in a loop cannot spin the broker
FAILED_AUTH_DELAY = 0.1
PRE_AUTH = frozenset({codec.API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})
SASL_KEYS = (SASL_HANDSHAKE, SASL_AUTHENTICATE)


def may_connect(broker: Broker, peer: str) -> bool:
    """Whether a client that does not authenticate acts as the default user: unless SASL
    is required, under that user's loopback rule (issue 14): with RabbitMQ's defaults,
    guest, so only clients on this machine. Others must authenticate with SASL first."""
    config = broker.config
    name = config.default_user
    return (not config.kafka_sasl_required and name in broker.users.users
            and may_connect_from(config, name, peer))


def _why_sasl(broker: Broker) -> str:
    if broker.config.kafka_sasl_required:
        return "SASL authentication is required (kafka_sasl_required)"
    return (f"without SASL a client acts as the default user '{broker.config.default_user}', "
            f"who may only connect via localhost or does not exist")


class KafkaClientProtocol(asyncio.BufferedProtocol):
    """One client connection: bytes in, requests to the handlers, responses out in order."""

    def __init__(self, handlers: KafkaHandlers, connections: set[KafkaClientProtocol],
                 tls: bool = False, advertised_port: int = 0,
                 stats: KafkaStats | None = None) -> None:
        self.handlers = handlers
        self.stats = stats if stats is not None else KafkaStats()  # for Prometheus
        self.connections = connections
        self.tls = tls
        self.advertised_port = advertised_port  # Metadata's port for it; 0: the Node's
        self.conn = KafkaConnection(SUPPORTED)
        self.transport: asyncio.Transport | None = None
        self.session = Session("?", "localhost")
        self.record = KafkaConnectionRecord("?", "?", tls, self._close_now)
        self.waiting: set[asyncio.Future[Any]] = set()  # deferred responses (Fetch long-poll)
        self.paused = False
        self.backlog = False  # requests buffered but not yet served (MAX_ANSWERED reached)
        self.write_blocked = False  # the client does not read its answers (pause_writing)
        self.held = False  # reading paused for the two above

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or ("localhost", 0)
        self.session = Session(f"{peer[0]}:{peer[1]}", local[0])
        self.session.port = self.advertised_port
        broker = self.handlers.broker
        if len(broker.connections) >= broker.config.max_connections:
            log.warning("refusing Kafka connection from %s: max_connections (%d) reached",
                        self.session.peer, broker.config.max_connections)
            transport.close()
            return
        self.record = KafkaConnectionRecord(self.session.peer, f"{local[0]}:{local[1]}",
                                            self.tls, self._close_now)
        if may_connect(broker, self.session.peer):
            self.session.user = broker.config.default_user
            self.record.acting_as(broker, self.session.user, self.handlers.node.vhost, "none")
        else:
            self.conn.pre_auth = PRE_AUTH  # ApiVersions and SASL only, until authenticated
        broker.connections.add(self.record)
        self.connections.add(self)
        self.stats.opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.handlers.broker.connections.discard(self.record)
        retired = self.stats.retired_bytes
        retired[0] += self.record.bytes_in
        retired[1] += self.record.bytes_out
        self.transport = None
        for future in list(self.waiting):
            future.cancel()  # a Fetch still waiting drops its timer and stream hooks
        self.waiting.clear()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        return False  # close our side too: Kafka has no half-closed connections

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.record.bytes_in += nbytes
        self.conn.buffer_updated(nbytes)
        if not self.backlog:  # else a _serve is due and keeps the order
            self._serve()

    def data_received(self, data: bytes) -> None:
        """Bytes handed over whole (a transport without ``get_buffer`` support)."""
        self.record.bytes_in += len(data)
        self.conn.receive_data(data)
        if not self.backlog:
            self._serve()

    def pause_writing(self) -> None:
        """The client does not read its answers: read no more of its requests."""
        self.write_blocked = True
        self._hold()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._hold()
        if self.transport is not None:  # requests read meanwhile, or left for later
            asyncio.get_running_loop().call_soon(self._serve_later)

    def _hold(self) -> None:
        """Reading stops while answers pile up unread or requests wait (a client pipelining
        without reading cannot make the broker hold its answers: Kafka mutes the channel)."""
        hold = self.backlog or self.write_blocked
        if hold == self.held or self.transport is None or self.session.closing:
            return
        self.held = hold
        if hold:
            self.transport.pause_reading()
        elif not self.paused:
            self.transport.resume_reading()

    def _serve_later(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._serve()

    def _serve(self) -> None:
        """Answer the buffered requests, MAX_ANSWERED bytes of answers at most per pass."""
        conn = self.conn
        session = self.session
        record = self.record
        out: list[bytes] = []
        size = 0
        self.backlog = False
        stats = self.stats
        started = perf_counter()  # a request's time runs from the pass that serves it
        try:
            while (size < MAX_ANSWERED and conn.in_flight < MAX_IN_FLIGHT
                   and (request := conn.next_request()) is not NEED_DATA):
                if type(request) is SaslToken:  # after a SaslHandshake v0
                    reply = self.handlers.sasl.raw_token(request.token, session)
                    out.append(conn.send_token(request, reply))
                    self._after_sasl()
                    continue
                if not record.client_properties:
                    record.client_id(request.header.client_id)
                body = self.handlers.handle(request, session)
                if isinstance(body, asyncio.Future):
                    self._defer(request, body, started)
                elif body is NO_RESPONSE:  # Produce with acks=0
                    out.append(conn.no_response(request))
                    stats.answered(request.api_key, None, started)
                else:
                    out.append(conn.send_response(request, body))
                    size += len(out[-1])
                    stats.answered(request.api_key, body, started)
                if request.api_key in SASL_KEYS:
                    if session.closing:  # refused: the answer goes, then the socket closes
                        self._close(out, FAILED_AUTH_DELAY)
                        return
                    self._after_sasl()
        except SaslFailure as exc:  # a raw (v0) token: Kafka closes without an answer
            log.warning("Kafka SASL login refused for %s: %s", session.peer, exc)
            self._close(out, FAILED_AUTH_DELAY)
            return
        except KafkaProtocolError as exc:
            if conn.pre_auth is not None:
                log.warning("refusing Kafka connection from %s: %s; %s", session.peer, exc,
                            _why_sasl(self.handlers.broker))
            else:
                log.info("closing Kafka connection %s: %s", session.peer, exc)
            self._close(out)
            return
        except Exception as exc:  # a handler bug: one line, the connection closes
            log.error("closing Kafka connection %s: %s: %s", self.session.peer, type(exc).__name__, exc)
            log.debug("handler failure", exc_info=True)
            self._close(out)
            return
        out.append(conn.data_to_send())  # replies the connection made itself (KIP-511)
        data_out = b"".join(out)
        if data_out and self.transport is not None:
            record.bytes_out += len(data_out)
            self.transport.write(data_out)
        if self.waiting and conn.in_flight >= MAX_IN_FLIGHT and self.transport is not None:
            self.transport.pause_reading()  # resumed when the waiting responses are sent
            self.paused = True
        self.backlog = size >= MAX_ANSWERED
        self._hold()
        if self.backlog and not self.write_blocked:
            asyncio.get_running_loop().call_soon(self._serve_later)

    def _after_sasl(self) -> None:
        """Follow the SASL exchange: raw tokens after a v0 handshake, everything once
        authenticated (and the management API lists the user)."""
        exchange = self.session.sasl
        if exchange is None:
            return
        if exchange.done:
            if self.record.auth_mechanism != exchange.mechanism:
                self.conn.authenticated()
                self.record.acting_as(self.handlers.broker, self.session.user or "",
                                      self.handlers.node.vhost, exchange.mechanism)
        elif exchange.raw and not self.conn.raw_tokens:
            self.conn.expect_raw_tokens(True)

    def _defer(self, request: Request, future: asyncio.Future[Any], started: float) -> None:
        """Answer ``request`` when ``future`` completes (later responses queue behind it)."""
        self.waiting.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            self.waiting.discard(f)
            if f.cancelled() or self.transport is None:
                return
            try:
                body = f.result()
                if body is NO_RESPONSE:
                    data = self.conn.no_response(request)
                    body = None
                else:
                    data = self.conn.send_response(request, body)
                self.stats.answered(request.api_key, body, started)
            except Exception as exc:  # a handler bug, as in data_received: one line, close
                log.error("closing Kafka connection %s: %s: %s", self.session.peer,
                          type(exc).__name__, exc)
                log.debug("handler failure", exc_info=True)
                self._close([])
                return
            if data:
                self.record.bytes_out += len(data)
                self.transport.write(data)
            if self.paused and self.conn.in_flight < MAX_IN_FLIGHT:
                self.paused = False
                if not self.held:
                    self.transport.resume_reading()
                    asyncio.get_running_loop().call_soon(self._serve_later)  # what was read

        future.add_done_callback(done)

    def _close(self, ready: list[bytes], delay: float = 0.0) -> None:
        """Write what was already answered, then close (as Kafka's socket server does),
        ``delay`` seconds later with nothing more read meanwhile."""
        transport = self.transport
        if transport is None:
            return
        data = b"".join(ready)
        if data:
            self.record.bytes_out += len(data)
            transport.write(data)
        if delay:
            transport.pause_reading()
            asyncio.get_running_loop().call_later(delay, transport.close)
        else:
            transport.close()

    def _close_now(self) -> None:
        """Closed by the broker (management API, vhost deleted): no answer owed is sent."""
        if self.transport is not None:
            self.transport.close()


class KafkaListener:
    """The Kafka server socket and its live connections."""

    def __init__(self, broker: Broker, node: Node) -> None:
        self.handlers = KafkaHandlers(broker, node)
        self.connections: set[KafkaClientProtocol] = set()
        self.servers: list[asyncio.AbstractServer] = []  # plain, and TLS when configured
        self.ports: list[tuple[int, bool]] = []  # (bound port, TLS) for /api/overview
        self.stats = KafkaStats()  # the connections' counters, for Prometheus
        register(broker, self)  # how management/kafka_metrics.py finds the listener
        allocator.tune()  # 1-2 MB request and response buffers reuse heap pages

    async def start(self, host: str, port: int, **kwargs: Any) -> int:
        """Listen on ``host:port`` (``ssl=`` a context: SSL and SASL_SSL); returns the
        bound port. OSError as create_server raises it (the caller turns a port in use
        into its one-line StartupError). Called once per listening port."""
        loop = asyncio.get_running_loop()
        tls = kwargs.get("ssl") is not None
        bound = [0]  # a TLS client is sent to the TLS port in Metadata, not the plain one
        server = await loop.create_server(
            lambda: KafkaClientProtocol(self.handlers, self.connections, tls, bound[0],
                                        self.stats),
            host, port, reuse_address=True, backlog=1024, **kwargs)
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if tls:
            bound[0] = port
        self.ports.append((port, tls))
        return port

    def close(self) -> None:
        """Stop accepting and close every connection (they hold nothing to finish yet)."""
        for server in self.servers:
            server.close()
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.close()

    async def wait_closed(self) -> None:
        for server in self.servers:
            await server.wait_closed()
