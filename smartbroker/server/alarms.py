"""Resource alarms: memory high watermark and disk free limit, as RabbitMQ.

While an alarm is on, every connection that publishes is blocked: it gets
``connection.blocked`` (if its client supports it) and the broker stops reading its
socket, so publishers are held back by TCP while consumers elsewhere keep draining.
When every alarm clears, blocked connections get ``connection.unblocked`` and are read
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker

log = logging.getLogger("smartbroker.alarms")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_limit(watermark: float) -> int:
    """A watermark <= 1 is a fraction of RAM (RabbitMQ's default 0.4); above 1, bytes."""
    return int(total_memory() * watermark) if watermark <= 1 else int(watermark)


class ResourceMonitor:
    def __init__(self, broker: Broker, data_dir: Path, interval: float = 0.25) -> None:
        self.broker = broker
        self.data_dir = data_dir
        self.interval = interval
        self.memory_limit = memory_limit(broker.config.memory_high_watermark)
        self.disk_limit = broker.config.disk_free_limit
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.interval)

    def check(self) -> None:
        used = resident_bytes()
        self._set("memory", used > self.memory_limit, f"memory used {used} > limit {self.memory_limit}")
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return
        self._set("disk", free < self.disk_limit, f"disk free {free} < limit {self.disk_limit}")

    def _set(self, kind: str, on: bool, detail: str) -> None:
        alarms = self.broker.alarms
        if on and kind not in alarms:
            log.warning("%s alarm set: %s; blocking publishers", kind, detail)
            alarms.add(kind)
            for conn in list(self.broker.connections):
                if conn.has_published:
                    conn.block(f"low on {kind}")
        elif not on and kind in alarms:
            log.warning("%s alarm cleared", kind)
            alarms.discard(kind)
            if not alarms:
                for conn in list(self.broker.connections):
                    conn.unblock()
