"""How an AMQP connection ends: the close sequences RabbitMQ uses, out of the hot path.

Each way a connection can end (a connection error, a broker-initiated close, the client's
``connection.close``, a failed handshake that is dropped silently, a refused login, a bad
protocol header, a handshake timeout) is a plain function of the ``AMQPConnection`` it
ends; ``teardown`` releases its channels and exclusive queues. Kept apart from
``server/connection.py`` so that module holds only the per-frame and per-write work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pamqp import commands

from smartbroker.errors import ConnectionError
from smartbroker.protocol import codec
from smartbroker.protocol.states import CONNECTION, HANDSHAKE, SERVER, State

if TYPE_CHECKING:
    from smartbroker.server.connection import AMQPConnection

log = logging.getLogger("smartbroker.connection")

CLOSE_TIMEOUT = 3.0
SILENT_CLOSE_DELAY = 3.0  # RabbitMQ's ?SILENT_CLOSE_DELAY: a failed handshake waits, then hangs up
CLOSED_LINGER = 30.0  # after close-ok, the client closes the socket (RabbitMQ's ?CLOSING_TIMEOUT)
_ENDED = (State.CLOSING, State.CLOSED)


def _close_later(conn: AMQPConnection, delay: float) -> None:
    conn._timers.append(asyncio.get_running_loop().call_later(delay, conn.close_transport))


def connection_error(conn: AMQPConnection, err: ConnectionError) -> None:
    """A connection-level error: ``connection.close`` with its code once the handshake is
    done, silence before it, and the socket dropped if the client never answers."""
    state = conn.proto.state
    if state in _ENDED:
        return
    log.warning("closing connection %s: %s (class %d, method %d)", conn.name, err.reply_text,
                err.class_id, err.method_id)
    if state is State.AWAIT_HEADER:
        conn.close_transport()
        return
    if state in HANDSHAKE or (state, SERVER, commands.Connection.Close) not in CONNECTION:
        close_silently(conn)
        return
    teardown(conn)
    conn.write(conn.proto.send_connection_close(err.code, err.reply_text, err.class_id,
                                                err.method_id))
    _close_later(conn, CLOSE_TIMEOUT)


def server_close(conn: AMQPConnection, code: int, text: str) -> None:
    """Broker-initiated close (shutdown, management API)."""
    if conn.proto.state is State.OPEN:
        teardown(conn)
        conn.write(conn.proto.send_connection_close(code, text))
        conn.flush()
        _close_later(conn, CLOSE_TIMEOUT)
    else:
        conn.close_transport()


def closed_by_client(conn: AMQPConnection) -> None:
    """``connection.close`` from the client: release channels and exclusive queues now,
    answer close-ok, then leave the socket to the client as RabbitMQ does (closed here
    only after the heartbeat timeout, at most 30 s). A client that reads close-ok before
    EOF shuts down cleanly instead of seeing a lost connection."""
    teardown(conn)
    recorder = conn._commit_wait
    committed = recorder.pending() if recorder is not None else None
    if committed is None:
        conn.write(conn.proto.send_close_ok())
    else:  # cluster mode: its exclusive queues gone from etcd first (RabbitMQ's order)
        committed.add_done_callback(lambda _done: _close_ok_now(conn))
    if conn._heartbeats is not None:
        conn._heartbeats.stop()
    linger = conn.heartbeat if 0 < conn.heartbeat < CLOSED_LINGER else CLOSED_LINGER
    _close_later(conn, linger)


def _close_ok_now(conn: AMQPConnection) -> None:
    if conn.transport is not None and not conn.transport.is_closing():
        conn.write(conn.proto.send_close_ok())
        conn.flush()


def close_silently(conn: AMQPConnection) -> None:
    """A failed handshake (before tune-ok, or a login refused to a client without
    ``authentication_failure_close``): as RabbitMQ, no ``connection.close``; input is
    ignored and the socket dropped after SILENT_CLOSE_DELAY, which also slows down
    password guessing."""
    conn.proto.abort()
    _close_later(conn, SILENT_CLOSE_DELAY)


def refuse(conn: AMQPConnection, code: int, text: str) -> None:
    """``connection.close`` during the handshake (a refused login): the client reads it,
    answers close-ok (then we hang up) or is dropped after CLOSE_TIMEOUT."""
    conn.write(conn.proto.send_connection_close(code, text))
    _close_later(conn, CLOSE_TIMEOUT)


def bad_header(conn: AMQPConnection) -> None:
    """Not AMQP 0-9-1: answer with the header we speak, then hang up (as the spec says)."""
    if conn.transport is not None:
        conn.transport.write(codec.PROTOCOL_HEADER)
    conn.close_transport()


def handshake_timeout(conn: AMQPConnection) -> None:
    if conn.proto.state not in (State.OPEN, State.CLOSING, State.CLOSED):
        log.warning("handshake timeout on %s", conn.name)
        conn.close_transport()


def teardown(conn: AMQPConnection) -> None:
    """Release every channel (consumers, unacked messages) and the exclusive queues."""
    channels, conn.channels = conn.channels, {}
    for ch in channels.values():
        ch.teardown()
    conn._confirm_channels.clear()
    queues, conn.exclusive_queues = conn.exclusive_queues, set()
    for q in queues:
        conn.vhost.drop_queue(q)
