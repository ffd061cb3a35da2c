"""An AMQP answer that must wait for the disk: the connection holds its input meanwhile.

Why: a new stream's files (``meta.json``, ``partitioner``, ``name``) are fsynced off the
loop (``StreamQueue.created``, store/pathsync.py); a ``queue.declare-ok`` sent before that
fsync ends told the client "created" while a power cut could still lose the topic id and
the partitioner choice. The answer now waits for it, without blocking the loop.

AMQP answers on a channel in order, and the client may already have sent what follows the
declare (a publish to the new stream, another declare): the connection stops reading and
handling events until the answer is out, then handles what it had buffered. One fsync
round (a few ms) is the usual wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pamqp.commands import INDEX_MAPPING

from smartbroker.errors import ChannelError, ConnectionError
from smartbroker.server.not_found import retry_after_catch_up

log = logging.getLogger("smartbroker.connection")


def answer_when_done(conn: Any, future: Future[Any] | asyncio.Future[Any],
                     send: Callable[[], None], fail: Callable[[BaseException], None]) -> None:
    """``send()`` once ``future`` is done (``fail(exc)`` if it failed); until then
    ``conn`` (an ``AMQPConnection``) reads and handles nothing more. In a cluster the
    answer also waits for the etcd commit of the definitions changed so far."""
    waiting: asyncio.Future[Any] = asyncio.wrap_future(future)
    recorder = conn.broker.recorder
    committed = recorder.pending() if recorder is not None else None
    if committed is not None:
        waiting = asyncio.gather(waiting, committed)
    conn.held = waiting
    if conn.transport is not None:
        conn.transport.pause_reading()

    def release(done: asyncio.Future[Any]) -> None:
        conn.held = None
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        exc = None if done.cancelled() else done.exception()
        if exc is None:
            send()
        else:
            if not getattr(exc, "catch_up", False):  # a declare lost a race: retried
                log.error("connection %s: %s", conn.name, exc)
            fail(exc)
        if not conn.blocked and conn.held is None:  # an alarm or a catch-up keeps it paused
            transport.resume_reading()
        conn.handle_buffered()  # what arrived after the held method, then one flush

    waiting.add_done_callback(release)


def hold_for_definitions(conn: Any, ch: Any, committed: asyncio.Future[Any],
                         answer: list[bytes], ids: tuple[int, int],
                         again: Callable[[], None] | None = None) -> None:
    """Cluster mode: ``answer`` (what a handler wrote after changing definitions) goes out
    once etcd accepted the change ("a declare answers -ok only after etcd accepted it");
    a change etcd refused closes the channel instead (541, as an internal error); one etcd
    did not commit in time closes the connection, as RabbitMQ's Khepri timeout does.
    A queue or exchange another node created first (``exc.catch_up``: etcd_view's
    ``CreateConflict``) drops ``answer``: the node catches up and runs ``again``."""
    def fail(exc: BaseException) -> None:
        if getattr(exc, "catch_up", False) and again is not None \
                and retry_after_catch_up(conn, again):
            return
        if isinstance(exc, TimeoutError):  # rabbit_amqqueue_process: internal_error
            method = INDEX_MAPPING.get((ids[0] << 16) | ids[1])
            name = method.name.lower() if method is not None else "the operation"
            conn._connection_error(ConnectionError(  # noqa: SLF001 - server/'s own close
                541, f"could not {name} because the metadata store "
                     f"operation timed out", *ids))
            return
        conn.channel_failed(ch, ChannelError(541, f"the definitions store "
                                                  f"refused the change: {exc}", *ids))
    answer_when_done(conn, committed, lambda: conn.write_many(answer), fail)
