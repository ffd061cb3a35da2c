"""A watched local copy of one etcd prefix, with this node's unconfirmed writes over it.

Two layers make the copy. ``_confirmed`` is what etcd holds, up to ``revision``: the
prefix read at ``open()``, then every watch event in revision order (this node's own
writes come back through the watch like everyone else's). ``_ops`` are this node's writes
that the watch has not confirmed yet, applied over it. ``get``/``view`` see both, so a
writer reads its own change at once.

``write`` is synchronous (the broker records a change in the same call that makes it) and
only appends to ``_ops``; the writer task sends the ops in order, coalescing queued
writes into as few transactions as etcd allows (128 operations, under 1.5 MiB, no key
twice, no put inside a deleted range), and resolves each write's future with its
revision. ``pending()`` is the future of the last write: what a front end awaits before
it answers -ok. While etcd is unreachable the writer retries; a write etcd refuses (too
large) fails its future and is dropped from the view.

A write made with ``absent=True`` (a queue or exchange this node does not know) is
create-if-absent: its transaction also compares the keys' version to 0. When another
node created one first, nothing of that transaction is written (its other groups go again
alone), the write's future fails with ``CreateConflict`` and the view drops it, telling
subscribers "ours deleted, theirs created", so the caller can catch up and run again.

Subscribers hear ``(key, old, new)`` whenever a watch event (or dropping an op of ours
that etcd refused or that a later change superseded) changes what the view shows for a
key, so this node's own writes never come back as changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from smartbroker.cluster.etcd_client import (
    Delete,
    EtcdClient,
    EtcdRefused,
    EtcdUnavailable,
    Put,
    RevisionCompactedError,
    WatchEvent,
    stop_tasks,
)

log = logging.getLogger("smartbroker.cluster.view")

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_TXN_BYTES = 1 << 20  # below etcd's 1.5 MiB request limit, with room for the framing
_CONFLICT = -1  # _commit's answer when a create-if-absent key existed already
_RETRY = (0.05, 0.1, 0.25, 0.5, 1.0)  # seconds between attempts while etcd is away

Listener = Callable[[bytes, "bytes | None", "bytes | None"], None]


@dataclass(eq=False, slots=True)
class _Op:
    op: Put | Delete
    group: _Group
    revision: int | None = None  # set once etcd accepted it
    absent: bool = False  # a Put only if no one has created the key (create-if-absent)

    def covers(self, key: bytes) -> bool:
        k = self.op.key
        assert isinstance(k, bytes)
        return key.startswith(k) if isinstance(self.op, Delete) and self.op.prefix else key == k


@dataclass(eq=False, slots=True)
class _Group:
    """One writer call or one transaction/batch block: committed together if it fits."""
    ops: list[_Op] = field(default_factory=list)
    future: asyncio.Future[int] | None = None
    cursor: int = 0  # ops before it are in a transaction already
    unsent: int = 0  # ops etcd has not answered for yet


class CreateConflict(EtcdRefused):
    """A create-if-absent write found the key created by another node: the caller catches
    up (the watch brings the other record) and runs again (``catch_up`` says so)."""

    catch_up = True


class WatchedPrefix:
    """Everything under ``root`` (relative to the client's cluster prefix)."""

    def __init__(self, client: EtcdClient, root: bytes) -> None:
        self.client = client
        self.root = root
        self.revision = 0  # of the last watch event applied to _confirmed
        self._confirmed: dict[bytes, bytes] = {}
        self._ops: list[_Op] = []
        self._open: _Group | None = None  # the transaction/batch block being written
        self._depth = 0
        self._queue: list[_Group] = []
        self._wake = asyncio.Event()
        self._last: asyncio.Future[int] | None = None
        self._callbacks: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        """Read the prefix, then follow changes (watch) and send ours (writer)."""
        kvs, self.revision = await self.client.range(self.root)
        self._confirmed = {kv.key: kv.value for kv in kvs}
        self._tasks = [asyncio.create_task(self._watch_loop(), name="etcd-view-watch"),
                       asyncio.create_task(self._write_loop(), name="etcd-view-writer")]

    def subscribe(self, callback: Listener) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        """Stop watching and writing (writes not yet in etcd were never answered -ok)."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def aclose(self) -> None:
        """Send what is queued (for up to the client's timeout), then stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), self.client.timeout)
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)  # asyncio.wait_for in 3.11 (inside aetcd) can swallow a cancel

    # -- grouping ------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One group, sent as one etcd transaction when it fits in one (else in order, in
        as few as it takes); an exception drops the block's changes. Nests."""
        outer = self._begin()
        try:
            yield
        except BaseException:
            if outer:
                self._rollback()
            raise
        finally:
            self._depth -= 1
        if outer:
            self._end()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """As ``transaction``, but what the block wrote is kept even if it raises."""
        outer = self._begin()
        try:
            yield
        finally:
            self._depth -= 1
            if outer:
                self._end()

    def _begin(self) -> bool:
        self._depth += 1
        if self._depth == 1:
            self._open = _Group()
            return True
        return False

    def _end(self) -> None:
        group, self._open = self._open, None
        if group is not None and group.ops:
            self._enqueue(group)

    def _rollback(self) -> None:
        group, self._open = self._open, None
        if group is not None:
            self._ops = [o for o in self._ops if o.group is not group]

    def write(self, *ops: Put | Delete, absent: bool = False) -> None:
        """``absent``: each Put only if its key does not exist in etcd yet."""
        group = self._open or _Group()
        for op in ops:
            entry = _Op(op, group, absent=absent and isinstance(op, Put))
            group.ops.append(entry)
            self._ops.append(entry)
        if group is not self._open:
            self._enqueue(group)

    def _enqueue(self, group: _Group) -> None:
        group.future = asyncio.get_running_loop().create_future()
        group.future.add_done_callback(_retrieve)
        group.unsent = len(group.ops)
        self._last = group.future
        self._queue.append(group)
        self._wake.set()

    def pending(self) -> asyncio.Future[int] | None:
        """The future of the last change sent (its etcd revision); None when done."""
        last = self._last
        return last if last is not None and not last.done() else None

    async def flush(self) -> None:
        """Until every change written so far is in etcd (or refused)."""
        last = self._last
        if last is not None:
            await asyncio.wait([last])

    # -- the local view ------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        """What this node sees at ``key``: etcd's value, or its own change not yet back."""
        value = self._confirmed.get(key)
        for o in self._ops:
            if o.covers(key):
                value = o.op.value if isinstance(o.op, Put) else None
        return value

    def view(self, under: bytes = b"") -> dict[bytes, bytes]:
        """Every key under ``under`` as this node sees it (a copy)."""
        view = {k: v for k, v in self._confirmed.items() if k.startswith(under)}
        for o in self._ops:
            op = o.op
            if isinstance(op, Put):
                assert isinstance(op.key, bytes)
                if op.key.startswith(under):
                    view[op.key] = op.value
            else:
                for k in [k for k in view if o.covers(k)]:
                    del view[k]
        return view

    # -- the writer ----------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                txn = self._next_txn()
                revision = await self._commit(txn)
                groups = list(dict.fromkeys(o.group for o in txn))
                if (revision is None or revision == _CONFLICT) and len(groups) > 1:
                    for group in groups:  # one bad change (or conflict): not its neighbours
                        alone = [o for o in txn if o.group is group]
                        self._committed(alone, await self._commit(alone))
                else:
                    self._committed(txn, revision)

    def _committed(self, txn: list[_Op], revision: int | None) -> None:
        """etcd's answer for ``txn``: its revision, None when it refused it, ``_CONFLICT``
        when a create-if-absent key existed."""
        if revision == _CONFLICT:
            self._conflicted(txn)
            return
        for o in txn:
            o.revision = revision
            o.group.unsent -= 1
            future = o.group.future
            if future is not None and not future.done():
                if revision is None:
                    future.set_exception(EtcdRefused("etcd refused the change"))
                elif o.group.unsent == 0:
                    future.set_result(revision)
        if revision is None:  # refused: the view forgets it (callbacks say so)
            self._forget(txn)
        elif revision < self.revision:  # the watch is past it already: no event will
            self._forget([o for o in txn if o in self._ops])  # drop these ops

    def _next_txn(self) -> list[_Op]:
        """The longest run of queued ops etcd takes as one transaction (a group too big
        for one goes out in several, in order)."""
        txn: list[_Op] = []
        puts: set[bytes] = set()
        dels: list[_Op] = []
        size = 0
        while self._queue:
            group = self._queue[0]
            while group.cursor < len(group.ops):
                o = group.ops[group.cursor]
                key = o.op.key
                assert isinstance(key, bytes)
                if isinstance(o.op, Put):  # etcd: no key twice, no put inside a delete
                    cost = len(key) + len(o.op.value) + 32
                    clash = key in puts or any(d.covers(key) for d in dels)
                else:
                    cost = len(key) + 32
                    clash = any(o.covers(p) for p in puts)
                if txn and (clash or len(txn) == MAX_TXN_OPS or size + cost > MAX_TXN_BYTES):
                    return txn
                txn.append(o)
                group.cursor += 1
                size += cost
                if isinstance(o.op, Put):
                    puts.add(key)
                else:
                    dels.append(o)
            self._queue.pop(0)
        return txn

    def _conflicted(self, txn: list[_Op]) -> None:
        """Another node created a key first: our ops are dropped, and subscribers hear our
        record deleted, then theirs created (if the watch has it already), never a change
        from ours to theirs (which would leave ours applied)."""
        for o in txn:
            o.group.unsent -= 1
            future = o.group.future
            if future is not None and not future.done():
                key = o.op.key
                future.set_exception(CreateConflict(f"{key!r} was created by another node"))
        keys = self._touched(txn)
        before = {k: self.get(k) for k in keys}
        dropped = set(txn)
        self._ops = [o for o in self._ops if o not in dropped]
        self._notify({k: v for k, v in before.items() if v is not None}, gone=True)
        self._notify(dict.fromkeys(keys))

    async def _commit(self, txn: list[_Op]) -> int | None:
        """The transaction's revision; None when etcd refused it (or it could not be
        built: never a dead writer that every later -ok would wait for); ``_CONFLICT``
        when a create-if-absent key was there already."""
        ops = [o.op for o in txn]
        absent = [o.op.key for o in txn if o.absent]
        attempt = 0
        while True:
            try:
                revision = await self.client.commit(ops, absent=absent)
                return _CONFLICT if revision is None else revision
            except (EtcdRefused, TypeError, ValueError) as exc:
                log.error("etcd refused a definitions change (%d operation(s)): %s",
                          len(ops), exc)
                return None
            except EtcdUnavailable as exc:
                delay = _RETRY[min(attempt, len(_RETRY) - 1)]
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("definitions change waits for etcd: %s", exc)
                await asyncio.sleep(delay)

    def _forget(self, txn: list[_Op]) -> None:
        dropped = set(txn)
        keys = self._touched(txn)
        before = {k: self.get(k) for k in keys}
        self._ops = [o for o in self._ops if o not in dropped]
        self._notify(before)

    # -- the watch -----------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        """The client's watch resumes broken streams itself and ends only when the client
        is closed; a compacted history means reading everything again."""
        while True:
            try:
                async for event in self.client.watch(self.root, start_revision=self.revision + 1):
                    self._apply(event)
                return
            except RevisionCompactedError:
                while True:
                    try:
                        await self._resync()
                        break
                    except EtcdUnavailable as exc:
                        log.warning("re-reading %r from etcd: %s", self.root, exc)
                        await asyncio.sleep(_RETRY[-1])

    def _apply(self, event: WatchEvent) -> None:
        """One change from etcd: ops of ours it supersedes leave the overlay first."""
        done = [o for o in self._ops if o.revision is not None and o.revision < event.revision]
        keys = self._touched(done)
        keys.add(event.key)
        before = {k: self.get(k) for k in keys}
        if done:
            finished = set(done)
            self._ops = [o for o in self._ops if o not in finished]
        if event.kind == "put":
            self._confirmed[event.key] = event.value
        else:
            self._confirmed.pop(event.key, None)
        self.revision = event.revision
        self._notify(before)

    async def _resync(self) -> None:
        """The history since our revision was compacted away: read everything again."""
        kvs, revision = await self.client.range(self.root)
        before = {k: self.get(k) for k in {*self._confirmed, *(kv.key for kv in kvs)}}
        self._confirmed = {kv.key: kv.value for kv in kvs}
        self.revision = revision
        self._notify(before)

    def _touched(self, ops: list[_Op]) -> set[bytes]:
        keys: set[bytes] = set()
        for o in ops:
            key = o.op.key
            assert isinstance(key, bytes)
            if isinstance(o.op, Delete) and o.op.prefix:
                keys.update(k for k in self._confirmed if k.startswith(key))
            else:
                keys.add(key)
        return keys

    def _notify(self, before: dict[bytes, bytes | None], gone: bool = False) -> None:
        """``gone``: tell each key as deleted, whatever the view shows now."""
        for key, old in before.items():
            new = None if gone else self.get(key)
            if new != old:
                for callback in self._callbacks:
                    try:
                        callback(key, old, new)
                    except Exception:
                        log.exception("applying the change of %r failed", key)


def _retrieve(future: asyncio.Future[int]) -> None:
    """A refusal nobody awaited is logged by the writer, not as 'never retrieved'."""
    if not future.cancelled():
        future.exception()
