"""Reading the shared message log back at start-up: which durable queue holds what.

``recover`` replays the ``MessageStore``'s log once: ``E`` records give each queue its
entries (bodies stay on disk), ``a``/``A`` forget them, ``d``/``D`` mark them delivered
(they come back ``redelivered``, as RabbitMQ does after a crash). It rebuilds the store's
``refs`` and ``live`` counts that deletion and reclaim need. A damaged record is counted
and skipped: recovery never fails on one message. Split from ``durable.py`` (plain
functions of the store) so that module keeps the write and sync paths; runs once.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smartbroker.broker import durable  # the record format (a module: the two import each other)
from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.queues.arguments import parse_expiration
from smartbroker.store.reclaim import SparseSegments

if TYPE_CHECKING:
    from smartbroker.broker.durable import MessageStore
    from smartbroker.store.log import SegmentLog as Log


@dataclass(slots=True)
class RecoveredEntry:
    offset: int
    timestamp_ms: int
    size: int
    priority: int
    expiration_ms: int | None
    redelivered: bool
    stored: int = 0  # bytes of its enqueue record
    dead_reason: str | None = None  # held for at-least-once dead-lettering (``z`` mark)


def recover(store: MessageStore) -> dict[tuple[str, str], list[RecoveredEntry]]:
    """Every live (queue -> entries) in the log, in enqueue order, bodies left on disk."""
    lg = store.log
    sparse = SparseSegments(lg, store.reclaimer.kept)
    live = replay(lg, store, sparse.see)
    sparse.finish()
    refs = store._refs
    for entries in live.values():
        for entry in entries:
            offset = entry.offset
            ref = refs.get(offset)
            if ref is not None:
                refs[offset] = ref + 1
                continue
            refs[offset] = entry.stored << 16 | 1
            base = lg.segment_of(offset)
            if base is not None:
                store._live[base] += entry.stored
    return live


class Counts(Protocol):
    undecodable_properties: int


def replay(lg: Log, counts: Counts, see: Callable[[int, bool], None] | None = None
           ) -> dict[tuple[str, str], list[RecoveredEntry]]:
    """The replay both the shared store and a quorum queue's own log
    (``queues/quorum_log.py``) recover with: ``E`` records give each queue its entries,
    ``a``/``A`` forget them, ``d``/``D`` mark them delivered, ``z`` dead-lettered
    at-least-once (still held: ``dead_reason``). ``see(offset, is_enqueue)``
    hears every record (the shared store's sparse-segment bookkeeping)."""
    live: dict[tuple[str, str], dict[int, RecoveredEntry]] = defaultdict(dict)
    delivered: set[tuple[str, str, int]] = set()
    dead: dict[tuple[str, str, int], str] = {}
    for record in lg.scan_records():
        data = record.payload
        kind = data[:1]
        if see is not None:
            see(record.offset, kind == b"E")
        if kind == b"E":
            try:
                vhost, queues, msg = durable.decode_enqueue(data)
            except (struct.error, ValueError, IndexError):
                lg.stats.bad_records += 1
                continue
            priority, expiration_ms = _recovered_facts(counts, msg)
            entry = RecoveredEntry(record.offset, record.timestamp_ms, len(msg.body),
                                   priority, expiration_ms, False, len(data))
            for queue in queues:
                live[(vhost, queue)][record.offset] = entry if len(queues) == 1 else \
                    RecoveredEntry(*_fields(entry))
        elif kind in (b"a", b"d", b"A", b"D"):
            try:
                mark, vhost, queue, offsets = durable.decode_marks(data)
            except (struct.error, UnicodeDecodeError):
                lg.stats.bad_records += 1
                continue
            if mark == b"A":
                entries = live[(vhost, queue)]
                for offset in offsets:
                    entries.pop(offset, None)
            else:
                delivered.update((vhost, queue, offset) for offset in offsets)
        elif kind == durable.MARK_DEAD:
            try:
                reason, vhost, queue, offsets = durable.decode_dead(data)
            except (struct.error, UnicodeDecodeError):
                lg.stats.bad_records += 1
                continue
            dead.update(((vhost, queue, offset), reason) for offset in offsets)
    result: dict[tuple[str, str], list[RecoveredEntry]] = {}
    for (vhost, queue), entries in live.items():
        if not entries:
            continue
        for offset, entry in entries.items():
            entry.redelivered = (vhost, queue, offset) in delivered
            if dead:
                entry.dead_reason = dead.get((vhost, queue, offset))
        result[(vhost, queue)] = list(entries.values())
    return result


def _recovered_facts(counts: Counts, msg: Message) -> tuple[int, int | None]:
    """(priority, per-message TTL) of a recovered message. Properties that cannot be
    read (a record damaged on disk) are counted and the message is kept as if it had
    neither: recovery never fails on one message."""
    try:
        return (msg.priority if msg.flags & codec.FLAG_PRIORITY else 0), _expiration_ms(msg)
    except ValueError:
        counts.undecodable_properties += 1
        return 0, None


def _fields(entry: RecoveredEntry) -> Iterator[object]:
    return iter((entry.offset, entry.timestamp_ms, entry.size, entry.priority,
                 entry.expiration_ms, entry.redelivered, entry.stored))


def _expiration_ms(msg: Message) -> int | None:
    if not msg.flags & codec.FLAG_EXPIRATION:
        return None
    expiration = msg.properties.expiration  # unreadable properties: Malformed, counted
    return parse_expiration(expiration) if isinstance(expiration, str) else None
