"""One small async wrapper over aetcd, bound to the cluster's key prefix.

Every cluster module talks to etcd through ``EtcdClient`` and never imports aetcd itself,
so that the client library can be replaced in one place. Keys given to and returned by
the wrapper are RELATIVE to ``/smartbroker/<cluster-name>/`` (bytes or str); the prefix
keeps clusters sharing one etcd apart. Failures of etcd (down, timeout, no leader) come out
as one exception type, ``EtcdUnavailable``, so callers catch one thing.

What the wrapper adds over aetcd: paged prefix reads at one revision (a big definitions
set is more than one gRPC message), transactions that return their revision (so a node
can tell its own changes from others' in the watch stream), a watch that resumes after a
broken stream from the last revision it delivered, and a lease kept alive by a task.
Which endpoint is up, and what a failure means, is ``etcd_connection.py``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aetcd import rpc
from aetcd.exceptions import ClientError, RevisionCompactedError
from aetcd.utils import prefix_range_end

from smartbroker.cluster.etcd_connection import EtcdConnection, EtcdRefused, EtcdUnavailable

log = logging.getLogger(__name__)

DEFAULT_CLUSTER = "smartbroker"
_PAGE = 1000  # keys per range request of a prefix read (halved while a page is too big)
_RESUME_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)  # watch re-subscribe backoff, seconds

__all__ = ["KV", "Delete", "EtcdClient", "EtcdRefused", "EtcdUnavailable", "Put",
           "RevisionCompactedError", "WatchEvent", "stop_tasks"]


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes  # relative to the cluster prefix
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes | str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes | str
    prefix: bool = False  # delete every key under ``key``


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: bytes  # relative to the cluster prefix
    value: bytes  # b"" for a delete
    revision: int  # the revision of the change (for a delete, of the deletion)


class EtcdClient:
    """aetcd bound to ``/smartbroker/<cluster_name>/``. ``connect()`` picks the first
    endpoint that answers; after a failure the next call tries the next one."""

    def __init__(self, endpoints: str | Sequence[str], cluster_name: str = DEFAULT_CLUSTER,
                 *, timeout: float = 5.0) -> None:
        if not cluster_name or "/" in cluster_name:
            raise ValueError(f"cluster name must be non-empty without '/': {cluster_name!r}")
        self.cluster_name = cluster_name
        self.prefix = f"/smartbroker/{cluster_name}/".encode()
        self.timeout = timeout
        self._conn = EtcdConnection(endpoints, timeout)

    # -- connection ---------------------------------------------------------------------
    async def connect(self) -> None:
        await self._conn.connect()

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def key(self, relative: bytes | str) -> bytes:
        """The absolute etcd key of ``relative``."""
        return self.prefix + (relative.encode() if isinstance(relative, str) else relative)

    def _relative(self, key: bytes) -> bytes:
        return key[len(self.prefix):]

    # -- reads --------------------------------------------------------------------------
    async def get(self, key: bytes | str) -> KV | None:
        found, _ = await self.range(key, prefix=False)
        return found[0] if found else None

    async def range(self, key: bytes | str = b"", *, prefix: bool = True,
                    page: int = _PAGE) -> tuple[list[KV], int]:
        """Every key under ``key`` (or the one key), read in pages at ONE revision, and
        that revision (watch from revision + 1 to see every later change)."""
        start = self.key(key)
        end = prefix_range_end(start) if prefix else b""
        out: list[KV] = []
        revision = 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=page if prefix else 0,
                                       revision=revision)
            try:
                client = await self._conn.client()
                resp = await client.kvstub.Range(request, timeout=self.timeout,
                                                 metadata=client.metadata)
            except rpc.AioRpcError as exc:
                if exc.code() == rpc.StatusCode.RESOURCE_EXHAUSTED and page > 1:
                    page //= 2  # a page of big values over the message limit: smaller pages
                    continue
                raise await self._conn.failed(exc) from None
            except ClientError as exc:
                raise await self._conn.failed(exc) from None
            revision = revision or resp.header.revision
            out.extend(KV(self._relative(kv.key), kv.value, kv.mod_revision,
                          kv.create_revision, kv.lease) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, revision
            start = resp.kvs[-1].key + b"\0"

    async def newest(self, key: bytes | str = b"") -> int:
        """The highest mod revision of a key under ``key`` (0 when there is none): a
        watch of that prefix that has applied it has seen every key there now. One small
        read (keys only, one key), for the rare path that must catch up (a 404)."""
        start = self.key(key)
        request = rpc.RangeRequest(key=start, range_end=prefix_range_end(start), limit=1,
                                   keys_only=True, sort_order=rpc.RangeRequest.DESCEND,
                                   sort_target=rpc.RangeRequest.MOD)
        try:
            client = await self._conn.client()
            resp = await client.kvstub.Range(request, timeout=self.timeout,
                                             metadata=client.metadata)
        except (rpc.AioRpcError, ClientError) as exc:
            raise await self._conn.failed(exc) from None
        return resp.kvs[0].mod_revision if resp.kvs else 0

    # -- writes -------------------------------------------------------------------------
    async def put(self, key: bytes | str, value: bytes, lease: int = 0) -> int:
        """The revision of the write."""
        revision = await self.commit([Put(key, value, lease)])
        assert revision is not None
        return revision

    async def delete(self, key: bytes | str, *, prefix: bool = False) -> int:
        revision = await self.commit([Delete(key, prefix)])
        assert revision is not None
        return revision

    async def commit(self, ops: Iterable[Put | Delete], *,
                     absent: Iterable[bytes | str] = (),
                     mod_revisions: Mapping[bytes | str, int] | None = None) -> int | None:
        """One etcd transaction: all of ``ops`` or nothing. With conditions (keys that must
        be ``absent``, keys whose ``mod_revisions`` must match; 0 = absent), None when a
        condition failed and nothing was written. Otherwise the transaction's revision."""
        compare = [rpc.Compare(key=self.key(k), target=rpc.Compare.VERSION,
                               result=rpc.Compare.EQUAL, version=0) for k in absent]
        compare += [rpc.Compare(key=self.key(k), target=rpc.Compare.MOD,
                                result=rpc.Compare.EQUAL, mod_revision=rev)
                    for k, rev in (mod_revisions or {}).items()]
        request = rpc.TxnRequest(compare=compare, success=[self._op(op) for op in ops])
        try:
            client = await self._conn.client()
            resp = await client.kvstub.Txn(request, timeout=self.timeout,
                                           metadata=client.metadata)
        except (rpc.AioRpcError, ClientError) as exc:
            raise await self._conn.failed(exc) from None
        return resp.header.revision if resp.succeeded else None

    def _op(self, op: Put | Delete) -> rpc.RequestOp:
        key = self.key(op.key)
        if isinstance(op, Put):
            return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value,
                                                            lease=op.lease))
        end = prefix_range_end(key) if op.prefix else b""
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key,
                                                                          range_end=end))

    async def create_if_absent(self, key: bytes | str, value: bytes,
                               lease: int = 0) -> tuple[bool, KV]:
        """Put ``key`` only if no one has: (whether we created it, the value it holds)."""
        while True:
            if await self.commit([Put(key, value, lease)], absent=[key]) is not None:
                current = await self.get(key)
                if current is not None:
                    return True, current
            else:
                current = await self.get(key)
                if current is not None:  # else deleted meanwhile: try again
                    return False, current

    # -- watch --------------------------------------------------------------------------
    async def watch(self, key: bytes | str = b"", *, start_revision: int | None = None,
                    prefix: bool = True) -> AsyncIterator[WatchEvent]:
        """Every change under ``key`` from ``start_revision`` (inclusive; None: from now),
        in revision order. A broken stream (etcd restarted, endpoint lost) is resumed from
        the next revision. ``RevisionCompactedError`` when the history needed is gone:
        then read the prefix again and watch from there."""
        absolute = self.key(key)
        end = prefix_range_end(absolute) if prefix else None
        failures = 0
        while True:
            try:
                client = await self._conn.client()
                watch = await client.watch(absolute, range_end=end, start_revision=start_revision)
            except RevisionCompactedError:
                raise
            except (TimeoutError, rpc.AioRpcError, ClientError, EtcdUnavailable) as exc:
                if self._conn.closed:
                    return
                failures += 1
                await self._resume_pause(exc, failures)
                continue
            try:
                async for event in watch:
                    failures = 0
                    kv = event.kv
                    start_revision = kv.mod_revision + 1
                    kind: Literal["put", "delete"] = "put" if event.kind == "PUT" else "delete"
                    yield WatchEvent(kind, self._relative(kv.key), kv.value, kv.mod_revision)
                if self._conn.closed:  # the stream ended because we closed
                    return
            except RevisionCompactedError:
                raise
            except (rpc.AioRpcError, ClientError) as exc:
                if self._conn.closed:
                    return
                failures += 1
                await self._resume_pause(exc, failures)
            finally:
                with contextlib.suppress(Exception):
                    await watch.cancel()

    async def _resume_pause(self, exc: BaseException, failures: int) -> None:
        if not isinstance(exc, EtcdUnavailable):
            await self._conn.failed(exc)
        # once per outage, not once a second while etcd is away (the node says it once)
        (log.warning if failures == 1 else log.debug)("etcd watch broken (%s); resuming", exc)
        await asyncio.sleep(_RESUME_DELAYS[min(failures, len(_RESUME_DELAYS)) - 1])

    # -- leases -------------------------------------------------------------------------
    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        try:
            client = await self._conn.client()
            return (await client.lease(ttl)).id
        except (rpc.AioRpcError, ClientError) as exc:
            raise await self._conn.failed(exc) from None

    async def revoke_lease(self, lease_id: int) -> None:
        """Ends the lease now: its keys are deleted (a clean node stop)."""
        try:
            client = await self._conn.client()
            await client.revoke_lease(lease_id)
        except (rpc.AioRpcError, ClientError) as exc:
            raise await self._conn.failed(exc) from None

    async def refresh_lease(self, lease_id: int) -> int:
        """One keep-alive: the TTL left after it (0 or less: the lease has expired)."""
        try:
            client = await self._conn.client()
            reply = await client.refresh_lease(lease_id)
        except (rpc.AioRpcError, ClientError) as exc:
            raise await self._conn.failed(exc) from None
        return reply.TTL if reply is not None else 0

    async def keep_alive(self, lease_id: int, ttl: int,
                         on_lost: Callable[[], Awaitable[None] | None] | None = None) -> None:
        """Refresh the lease every ttl/3 seconds until cancelled. Returns (after calling
        ``on_lost``) once the lease is gone: expired in etcd, or no refresh got through
        for a whole ``ttl`` (etcd will have expired it by then)."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + ttl
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                left = await self.refresh_lease(lease_id)
            except EtcdUnavailable as exc:
                log.warning("lease %x keep-alive failed: %s", lease_id, exc)
                left = 1 if loop.time() < expires else 0
            else:
                expires = loop.time() + left
            if left <= 0:
                log.warning("lease %x lost", lease_id)
                if on_lost is not None:
                    result = on_lost()
                    if result is not None:
                        await result
                return


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again while one survives (at most
    about 1 s). 3.11's ``asyncio.wait_for`` inside aetcd can swallow a cancel: a plain
    ``await task`` then waits forever, and a node stopping hangs until it is killed."""
    pending = list(tasks)
    for _ in range(10):
        for task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "exception was never retrieved" later
        pending = [task for task in pending if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
