"""The live aetcd channel behind ``EtcdClient``: which endpoint, whether it answers, and
what a failure means.

``EtcdClient`` (``etcd_client.py``) is the key-value API; this module is the part that
does not care about keys. It connects to the first endpoint that proves it answers (the
gRPC channel is lazy, so a status call), drops the channel when a call finds the server
lost or silent so that the next call tries the next endpoint, and turns every aetcd or
gRPC failure into one of two exceptions: ``EtcdRefused`` (etcd answered no: sending the
same request again cannot succeed) or its parent ``EtcdUnavailable`` (anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from urllib.parse import urlsplit

import aetcd
from aetcd import rpc
from aetcd.exceptions import (
    ClientError,
    ConnectionFailedError,
    ConnectionTimeoutError,
    InvalidArgumentError,
)

# a reply may carry several values of up to etcd's 1.5 MiB request limit
_GRPC_OPTIONS = {"grpc.max_receive_message_length": 32 << 20}


class EtcdUnavailable(Exception):
    """etcd did not answer or refused (down, timeout, no leader, request too large)."""


class EtcdRefused(EtcdUnavailable):
    """etcd answered and refused the request itself (too large, too many operations,
    a key twice in one transaction): sending it again cannot succeed."""


def parse_endpoints(endpoints: str | Sequence[str]) -> list[tuple[str, int]]:
    """``http://h:p,h2:p2`` (or a list) -> [(host, port)]; the scheme is optional."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        parts = urlsplit(item if "//" in item else f"//{item}")
        if parts.hostname is None:
            raise ValueError(f"not an etcd endpoint: {item!r}")
        out.append((parts.hostname, parts.port or 2379))
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


class EtcdConnection:
    """One aetcd client at a time, to the first of ``endpoints`` that answers; after a
    failure (``failed``) the next ``client()`` tries the next one."""

    def __init__(self, endpoints: str | Sequence[str], timeout: float) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self._next = 0  # index of the endpoint to try first
        self._client: aetcd.Client | None = None
        self._closed = False  # close() was called: watches end instead of resuming
        self._connecting = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    async def client(self) -> aetcd.Client:
        """The connected aetcd client (connecting first if there is none)."""
        await self.connect()
        assert self._client is not None
        return self._client

    async def connect(self) -> None:
        if self._closed:
            raise EtcdUnavailable("etcd client closed")
        if self._client is not None:
            return
        async with self._connecting:  # the watch and a writer reconnecting at once: one
            if self._client is None:  # channel, not two (one of them leaked)
                await self._connect()
        if self._closed:  # closed while connecting
            await self._drop()
            raise EtcdUnavailable("etcd client closed")

    async def _connect(self) -> None:
        errors = []
        for i in range(len(self.endpoints)):
            host, port = self.endpoints[(self._next + i) % len(self.endpoints)]
            client = aetcd.Client(host=host, port=port, timeout=int(max(1, self.timeout)),
                                  options=_GRPC_OPTIONS)
            try:
                await client.connect()
                await client.status()  # the channel is lazy: this proves the server answers
            except (ClientError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                with contextlib.suppress(Exception):
                    await client.close()
                continue
            self._next = (self._next + i) % len(self.endpoints)
            self._client = client
            return
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def close(self) -> None:
        self._closed = True
        await self._drop()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def failed(self, exc: BaseException) -> EtcdUnavailable:
        """The error to raise; a lost or silent server also drops the connection (the
        next call tries the next endpoint)."""
        if isinstance(exc, ConnectionFailedError | ConnectionTimeoutError) or \
                (isinstance(exc, rpc.AioRpcError) and
                 exc.code() in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED)):
            self._next = (self._next + 1) % len(self.endpoints)
            await self._drop()
        detail = exc.details() if isinstance(exc, rpc.AioRpcError) else str(exc)
        if isinstance(exc, InvalidArgumentError) or (isinstance(exc, rpc.AioRpcError) and exc.code()
                                                     in (rpc.StatusCode.INVALID_ARGUMENT,
                                                         rpc.StatusCode.RESOURCE_EXHAUSTED)):
            return EtcdRefused(f"etcd refused: {detail}")
        return EtcdUnavailable(f"etcd: {detail}")
