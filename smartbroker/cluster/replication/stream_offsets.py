"""A replicated stream's group offsets committed on a node that does not lead them.

The group offsets of a replicated stream live in one replicated log (on partition 0's
members, led by the stream's leader: ``stream_replicas.py``). An AMQP consumer group runs
on each node over the partitions that node leads, so its acks commit on that node. Where
the node does not lead the offsets log, its offset book writes to ``ForwardedOffsets``:
the commit is kept in memory (the group reads it back at once) and sent to the offsets
log's leader (``METHOD`` on the cluster link, the newest record per group and partition,
batched per loop pass, sent again until that leader has appended it and the replica set
holds it). So the commits survive this node's restart and a failover.

Reading: a node that holds a copy of the offsets log reads the group offsets from it
(``seed``) when it opens the stream and each time it starts leading a partition, and
the groups that own that partition here resume from there (``resume_groups``). A node
without a copy asks the leader (``READ``). The leader's answer is the truth; the
records this node has not yet sent win over it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.spread_replicas import OFFSETS
from smartbroker.queues.offsets import OffsetBook
from smartbroker.store.memory import MemoryLog

if TYPE_CHECKING:
    from smartbroker.cluster.replication.stream_replica_sets import StreamReplicas
    from smartbroker.cluster.replication.stream_replicas import StreamCopies

log = logging.getLogger("smartbroker.cluster")
METHOD = "stream.offsets.commit"  # (vhost, stream, records) -> appended by the leader
READ = "stream.offsets.read"  # (vhost, stream) -> every record the leader's book holds
RETRY = 0.5  # seconds between two attempts while the offsets leader is unreachable
NOT_LEADING = b'{"not_leading": true}'  # an answer: ask again (a refusal, not an error)
COMMIT_WAIT = 10.0  # how long the leader waits for its replica set before answering


def _encode(records: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[base64.b64encode(k).decode(), base64.b64encode(v).decode()] for k, v in records]


def _decode(items: Any) -> list[tuple[bytes, bytes]]:
    out = []
    for item in items if isinstance(items, list) else ():
        try:
            out.append((base64.b64decode(item[0]), base64.b64decode(item[1])))
        except (ValueError, TypeError, IndexError):
            continue
    return out


def apply_records(book: OffsetBook, records: Iterable[tuple[bytes, bytes]], *,
                  write: bool) -> None:
    """``records`` (the offsets log's key and payload) into ``book``; ``write``: through
    its log (the leader), else only its tables (a seed)."""
    scratch = MemoryLog()
    for key, payload in records:
        scratch.append(payload, None, key)
    parsed = OffsetBook(scratch)  # the one decoder of the record format
    keys = {_split(k) for k, _ in records}
    for group, p in (k for k in keys if k is not None):
        offset = parsed.offsets.get((group, p))
        if write:
            if offset is None:
                book.forget(group, [p])
            else:
                epoch, metadata = parsed.extra_of(group, p)
                book.commit(group, p, offset, metadata, epoch)
        elif offset is None:
            book.offsets.pop((group, p), None)
            book.extra.pop((group, p), None)
        else:
            book.offsets[(group, p)] = offset
            extra = parsed.extra.get((group, p))
            if extra is None:
                book.extra.pop((group, p), None)
            else:
                book.extra[(group, p)] = extra


def _split(key: bytes) -> tuple[str, int] | None:
    group, _, part = key.decode(errors="replace").rpartition("\x00")
    return (group, int(part)) if part.isdigit() else None


def book_records(book: OffsetBook) -> list[tuple[bytes, bytes]]:
    """Every committed offset of ``book`` as the offsets log would hold it."""
    scratch = MemoryLog()
    copy = OffsetBook(scratch)
    for (group, p), offset in book.offsets.items():
        epoch, metadata = book.extra_of(group, p)
        copy.commit(group, p, offset, metadata, epoch)
    return [(r.key, bytes(r.payload)) for r in scratch.scan_records() if r.key is not None]


class ForwardedOffsets(MemoryLog):
    """The offset book's log on a node that does not lead the offsets log."""

    def __init__(self, copies: StreamCopies) -> None:
        super().__init__()
        self.copies = copies
        self.pending: dict[bytes, bytes] = {}  # key -> newest payload not yet sent
        self._task: asyncio.Task[None] | None = None

    def append(self, payload: bytes, timestamp_ms: int | None = None,
               key: bytes | None = None) -> int:
        offset = super().append(payload, timestamp_ms, key)
        if key is not None:
            self.pending.pop(key, None)
            self.pending[key] = bytes(payload)
            if self._task is None or self._task.done():
                self._task = self.copies.owner.spawn(self._send())
        return offset

    async def _send(self) -> None:
        """Send what is pending to the offsets leader until it took everything."""
        await asyncio.sleep(0)  # one batch per loop pass
        while self.pending and not self.copies.closed:
            batch = dict(self.pending)
            try:
                await self.copies.owner.offsets_link.send(self.copies.stream, list(batch.items()))
            except Exception as exc:  # noqa: BLE001 - down, no leader yet, refused: again
                log.debug("group offsets of stream '%s' not sent yet: %s",
                          self.copies.stream.name, exc)
                await asyncio.sleep(RETRY)
                continue
            for k, v in batch.items():
                if self.pending.get(k) == v:
                    del self.pending[k]


def seed(copies: StreamCopies, records: list[tuple[bytes, bytes]] | None) -> None:
    """The book's tables as the replicated offsets hold them (``records``; None: this
    node's copy of the offsets log), with this node's unsent commits over them."""
    book = copies.stream.offsets
    if records is None:
        if copies.real_offsets is None:
            return
        fresh = OffsetBook(copies.real_offsets)
        book.offsets, book.extra = fresh.offsets, fresh.extra
    else:
        book.offsets, book.extra = {}, {}
        apply_records(book, records, write=False)
    unsent = getattr(book.log, "pending", None)
    if unsent:
        apply_records(book, list(unsent.items()), write=False)


def serve_partition(copies: StreamCopies, p: int) -> None:
    """This node now serves partition ``p``: its groups read on from the replicated
    committed offsets (this node's copy of them, or the leader's answer)."""
    offsets = copies.copies.get(OFFSETS)
    if offsets is not None and not offsets.leading:
        seed(copies, None)
    if offsets is not None:
        resume_groups(copies.stream, p)
    else:
        copies.owner.spawn(read_from_leader(copies, p))


async def read_from_leader(copies: StreamCopies, p: int | None) -> None:
    """No copy of the offsets here: the group offsets as their leader holds them (asked
    until it answers or this node stops forwarding its commits)."""
    stream = copies.stream
    while not copies.closed and stream.offsets.log is copies.detached:
        try:
            records = await copies.owner.offsets_link.read(stream)
        except Exception as exc:  # noqa: BLE001 - no leader yet, down: again
            log.debug("group offsets of stream '%s' not read yet: %s", stream.name, exc)
            await asyncio.sleep(RETRY)
            continue
        seed(copies, records)
        if p is not None:
            resume_groups(stream, p)
        return


def resume_groups(stream: Any, p: int) -> None:
    """Partition ``p`` is served here from now on: each live group's owner of it reads on
    from the group's committed offset (its cursor was set from what this node knew)."""
    for group in stream.groups.live.values():
        owner = group.owner.get(p)
        if owner is not None:
            owner.reader.cursors[p] = group.committed(p)
            progress = group.progress.get(p)
            if progress is not None:
                progress.pending.clear()
                progress.acked.clear()


class OffsetsLink:
    """The two link calls: commits sent to the offsets leader, and reads of its book."""

    def __init__(self, replicas: StreamReplicas) -> None:
        self.replicas = replicas
        link = getattr(replicas.cluster, "link", None)
        if link is not None:
            link.on_call(METHOD, self._answer_commit)
            link.on_call(READ, self._answer_read)

    def _leader(self, stream: Any) -> str:
        placement = self.replicas.forwarding.placement.get(stream.vhost, stream.name)
        if placement is None or placement.leader == self.replicas.node:
            raise RuntimeError(f"no other node leads the group offsets of '{stream.name}'")
        return placement.leader

    async def send(self, stream: Any, records: list[tuple[bytes, bytes]]) -> None:
        payload = encode_request(stream.vhost, stream.name, records)
        decode_reply(await self.replicas.cluster.link.call(self._leader(stream), METHOD, payload))

    async def read(self, stream: Any) -> list[tuple[bytes, bytes]]:
        payload = encode_request(stream.vhost, stream.name, None)
        return decode_reply(await self.replicas.cluster.link.call(
            self._leader(stream), READ, payload))

    def _leading(self, payload: bytes) -> tuple[StreamCopies | None, list[tuple[bytes, bytes]]]:
        """The stream's copies when this node leads its group offsets (else None: the
        asker tries again, e.g. while an election is under way)."""
        vhost, name, records = decode_request(payload)
        found = self.replicas.streams.get((vhost, name))
        copy = None if found is None else found.copies.get(OFFSETS)
        return (found if copy is not None and copy.leading else None), records

    async def _answer_commit(self, peer: str, payload: bytes) -> bytes:
        """Another node's group commits: appended here, answered once replicated."""
        found, records = self._leading(payload)
        if found is None:
            return NOT_LEADING
        apply_records(found.stream.offsets, records, write=True)
        committed = found.offsets_committed()
        if committed is not None:
            try:
                await asyncio.wait_for(committed, COMMIT_WAIT)
            except Exception:  # noqa: BLE001 - leadership lost, too few replicas: again
                return NOT_LEADING
        return encode_reply([])

    def _answer_read(self, peer: str, payload: bytes) -> bytes:
        found, _ = self._leading(payload)
        return NOT_LEADING if found is None else encode_reply(book_records(found.stream.offsets))


def encode_request(vhost: str, name: str, records: list[tuple[bytes, bytes]] | None) -> bytes:
    body: dict[str, Any] = {"vhost": vhost, "stream": name}
    if records is not None:
        body["records"] = _encode(records)
    return json.dumps(body).encode()


def decode_request(payload: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    body = json.loads(payload)
    return str(body["vhost"]), str(body["stream"]), _decode(body.get("records"))


def decode_reply(payload: bytes) -> list[tuple[bytes, bytes]]:
    """The records of an answer; raises when the asked node did not take or read them."""
    body = json.loads(payload)
    if body.get("not_leading"):
        raise RuntimeError("the node asked does not lead the group offsets (yet)")
    return _decode(body.get("records"))


def encode_reply(records: list[tuple[bytes, bytes]]) -> bytes:
    return json.dumps({"records": _encode(records)}).encode()


__all__ = ["COMMIT_WAIT", "METHOD", "READ", "ForwardedOffsets", "OffsetsLink", "apply_records",
           "book_records", "decode_reply", "decode_request", "encode_reply",
           "encode_request", "read_from_leader", "resume_groups", "seed",
           "serve_partition"]
