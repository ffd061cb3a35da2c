"""Cluster mode: a 404 about a queue or exchange waits until this node caught up with etcd.

Why: another node may have declared it a moment ago (its declare-ok went out once etcd
took it) and this node's watch has not applied it yet; RabbitMQ makes a queue visible on
every node before declare-ok. The connection holds its input (as ``held.py`` does for an
answer waiting for the disk, so AMQP answers stay in order), awaits ``broker.catch_up``
(cluster/visibility.py, bounded), then runs the refused method or publish once more; a
second 404 is answered. On a single node ``broker.catch_up`` is None: nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from smartbroker.errors import ChannelError

log = logging.getLogger("smartbroker.connection")


def retry_after_catch_up(conn: Any, again: Callable[[], None], locked: str | None = None) -> bool:
    """True when ``again`` will run once the node caught up (``conn``'s input held until
    then); False on a single node or a closing connection: answer the 404 now.
    ``locked``: a 405 about that queue instead (another node's exclusive queue that may
    be gone already: ``exclusive_queues.released``)."""
    catch_up = conn.broker.catch_up
    transport = conn.transport
    if catch_up is None or transport is None or transport.is_closing():
        return False
    vhost = conn.vhost.name if conn.vhost is not None else None
    task = asyncio.ensure_future(catch_up(vhost, locked) if locked else catch_up(vhost))
    conn.held = task
    transport.pause_reading()

    def release(done: asyncio.Future[Any]) -> None:
        conn.held = None
        if not done.cancelled() and done.exception() is not None:
            log.warning("catching up with etcd before a 404 failed: %s", done.exception())
        if conn.transport is None or conn.transport.is_closing():
            return
        if not conn.blocked:  # a resource alarm keeps it paused (it resumes it)
            conn.transport.resume_reading()
        conn.handle_buffered(again)  # the method again, then what arrived after it

    task.add_done_callback(release)
    return True


def publish_again(conn: Any, ch: Any, event: Any) -> None:
    """A publish refused with 404 (no exchange) once more, after the catch-up (its channel
    may have been closed meanwhile: then nothing)."""
    if conn.channels.get(ch.number) is not ch or ch.closing:
        return
    try:
        ch.publish(event.route, event.mandatory, event.header, event.flags, event.body)
    except ChannelError as err:
        conn.channel_failed(ch, err.at(60, 40))


def method_again(conn: Any, number: int, method: Any, ch: Any) -> None:
    """A method refused with 404 once more, after the catch-up (as ``publish_again``)."""
    if conn.channels.get(number) is ch and not ch.closing:
        conn._method(number, method, False)  # noqa: SLF001 - the connection's own retry
