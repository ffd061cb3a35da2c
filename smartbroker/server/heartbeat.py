"""AMQP heartbeats for one connection: send one when idle, drop a silent peer.

Ticks every half interval: a heartbeat frame goes out if nothing was written since the
last tick, and a peer that sent no byte for two full intervals (four ticks) is dropped,
as RabbitMQ does (no connection.close: the peer is presumed gone).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from smartbroker.protocol import codec
from smartbroker.protocol.states import State

if TYPE_CHECKING:
    from smartbroker.server.connection import AMQPConnection

log = logging.getLogger("smartbroker.connection")


class Heartbeats:
    def __init__(self, conn: AMQPConnection, interval: int) -> None:
        self.conn = conn
        self.interval = interval
        self.idle_ticks = 0
        self._timer: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval / 2, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        conn = self.conn
        if conn.state is State.CLOSED:
            return
        if not conn.sent:
            conn.write(codec.HEARTBEAT_FRAME)
        conn.sent = False
        self.idle_ticks = 0 if conn.received else self.idle_ticks + 1
        conn.received = False
        if self.idle_ticks >= 4:  # two full heartbeat intervals without a byte
            log.warning("missed heartbeats from client %s, timeout: %ds", conn.name, self.interval)
            if conn.transport is not None:
                conn.transport.abort()
            return
        self._schedule()
