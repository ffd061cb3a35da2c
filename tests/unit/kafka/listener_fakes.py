"""What the unit tests of the Kafka listener and its sans-IO connection drive them with,
without a socket or a loop: a fake asyncio transport, request framing, and the
correlation ids of the answers written."""

from __future__ import annotations

import struct
from typing import Any


class FakeTransport:
    """The part of an asyncio transport the listener uses: writes are kept, a write after
    close fails the test, and read pauses are recorded (``paused``, ``reading``)."""

    def __init__(self, peer: str = "127.0.0.1", local: str = "10.0.0.1") -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False
        self.peer = peer
        self.local = local  # the address the client connected to: what Metadata advertises

    @property
    def reading(self) -> bool:
        return not self.paused

    def get_extra_info(self, name: str) -> Any:
        return {"peername": (self.peer, 5555), "sockname": (self.local, 9092)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def frame(payload: bytes) -> bytes:
    """A request as it travels: its size, then ``payload``."""
    return struct.pack(">i", len(payload)) + payload


def api_versions(corr: int) -> bytes:
    """An ApiVersions v0 request with correlation id ``corr`` and no client id."""
    return frame(struct.pack(">hhih", 18, 0, corr, -1))


def correlation_ids(data: bytes | list[bytes]) -> list[int]:
    """The correlation id of every answer in ``data`` (or a transport's ``writes``)."""
    if isinstance(data, list):
        data = b"".join(data)
    out, pos = [], 0
    while pos < len(data):
        size, corr = struct.unpack_from(">ii", data, pos)
        out.append(corr)
        pos += 4 + size
    return out
