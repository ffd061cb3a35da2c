"""The Kafka listener: one ``asyncio.Protocol`` per connection around the sans-IO
``KafkaConnection``, and ``KafkaListener`` to start and stop the server.

Requests are answered inside ``data_received``, so the responses of one read leave in one
``transport.write``; a handler may instead return a future (a Fetch waiting for data), whose
response is written when it completes, after the ones before it (``KafkaConnection`` keeps
request order). A request the client sent badly closes the connection with one log line
(Kafka does the same), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from smartbroker.broker.access import may_connect_from
from smartbroker.broker.core import Broker
from smartbroker.kafka.codec import Request
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node, Session
from smartbroker.kafka.produce import NO_RESPONSE
from smartbroker.kafka.protocol import NEED_DATA, KafkaConnection, KafkaProtocolError

log = logging.getLogger("smartbroker.kafka")
MAX_IN_FLIGHT = 64  # stop reading while this many responses are owed (Kafka mutes a channel)


def may_connect(broker: Broker, peer: str) -> bool:
    """Without SASL a Kafka client acts as the default user, under that user's loopback
    rule (issue 14): with RabbitMQ's defaults, guest, so only clients on this machine. A
    refused client is dropped at once, as Kafka drops one whose authentication fails."""
    name = broker.config.default_user
    if name in broker.users.users and may_connect_from(broker.config, name, peer):
        return True
    log.warning("refusing Kafka connection from %s: without SASL a client acts as the "
                "default user '%s', who may only connect via localhost or does not exist",
                peer, name)
    return False


class KafkaClientProtocol(asyncio.Protocol):
    """One client connection: bytes in, requests to the handlers, responses out in order."""

    def __init__(self, handlers: KafkaHandlers, connections: set[KafkaClientProtocol]) -> None:
        self.handlers = handlers
        self.connections = connections
        self.conn = KafkaConnection(SUPPORTED)
        self.transport: asyncio.Transport | None = None
        self.session = Session("?", "localhost")
        self.waiting: set[asyncio.Future[Any]] = set()  # deferred responses (Fetch long-poll)
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or ("localhost", 0)
        self.session = Session(f"{peer[0]}:{peer[1]}", local[0])
        if not may_connect(self.handlers.broker, self.session.peer):
            transport.close()
            return
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        for future in list(self.waiting):
            future.cancel()  # a Fetch still waiting drops its timer and stream hooks
        self.waiting.clear()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        return False  # close our side too: Kafka has no half-closed connections

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        out: list[bytes] = []
        try:
            while (request := conn.next_request()) is not NEED_DATA:
                body = self.handlers.handle(request, self.session)
                if isinstance(body, asyncio.Future):
                    self._defer(request, body)
                elif body is NO_RESPONSE:  # Produce with acks=0
                    out.append(conn.no_response(request))
                else:
                    out.append(conn.send_response(request, body))
        except KafkaProtocolError as exc:
            log.info("closing Kafka connection %s: %s", self.session.peer, exc)
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
            self.transport.write(data_out)
        if self.waiting and conn.in_flight >= MAX_IN_FLIGHT and self.transport is not None:
            self.transport.pause_reading()  # resumed when the waiting responses are sent
            self.paused = True

    def _defer(self, request: Request, future: asyncio.Future[Any]) -> None:
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
                else:
                    data = self.conn.send_response(request, body)
            except Exception as exc:  # a handler bug, as in data_received: one line, close
                log.error("closing Kafka connection %s: %s: %s", self.session.peer,
                          type(exc).__name__, exc)
                log.debug("handler failure", exc_info=True)
                self._close([])
                return
            if data:
                self.transport.write(data)
            if self.paused and self.conn.in_flight < MAX_IN_FLIGHT:
                self.paused = False
                self.transport.resume_reading()

        future.add_done_callback(done)

    def _close(self, ready: list[bytes]) -> None:
        """Write what was already answered, then close (as Kafka's socket server does)."""
        if self.transport is None:
            return
        data = b"".join(ready)
        if data:
            self.transport.write(data)
        self.transport.close()


class KafkaListener:
    """The Kafka server socket and its live connections."""

    def __init__(self, broker: Broker, node: Node) -> None:
        self.handlers = KafkaHandlers(broker, node)
        self.connections: set[KafkaClientProtocol] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, **kwargs: Any) -> int:
        """Listen on ``host:port``; returns the bound port. OSError as create_server
        raises it (the caller turns a port in use into its one-line StartupError)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: KafkaClientProtocol(self.handlers, self.connections), host, port,
            reuse_address=True, backlog=1024, **kwargs)
        return self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop accepting and close every connection (they hold nothing to finish yet)."""
        if self.server is not None:
            self.server.close()
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
