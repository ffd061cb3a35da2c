"""Replication's names and etcd records (docs/replication.md), as values: no I/O.

* ``LogName``: which log (a quorum queue, or one partition of a stream) and its id
  ``<vhost>/<queue>[/<partition>]``, each name percent-encoded as definitions keys are.
* ``replica/leader/<id>`` = ``{"node": n}`` on the leader's membership lease; its
  mod_revision is the leader's epoch and fencing token.
* ``replica/isr/<id>`` = ``{"members": [...], "isr": [...], "epoch": e}`` (no lease).
* ``replica/transfer/<id>`` = ``{"to": n}`` (a leadership transfer asked for).

Bad values decode to None, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from smartbroker.cluster.definitions_keys import seg, unseg

PREFIX = "replica/"
LEADER = "replica/leader/"
ISR = "replica/isr/"
TRANSFER = "replica/transfer/"
KINDS = (LEADER, ISR, TRANSFER)


class NotLeader(Exception):
    """This node does not (or no longer) lead the log: nothing it holds is confirmed.
    ``leader``: the leader it knows of, if any."""

    def __init__(self, text: str, leader: str | None = None) -> None:
        super().__init__(text)
        self.leader = leader


class LogName(NamedTuple):
    """One replicated log: a quorum queue (``partition`` None) or a stream partition."""

    vhost: str
    queue: str
    partition: int | None = None

    @property
    def id(self) -> str:
        base = f"{seg(self.vhost).decode()}/{seg(self.queue).decode()}"
        return base if self.partition is None else f"{base}/{self.partition}"

    @classmethod
    def parse(cls, text: str | bytes) -> LogName | None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        parts = text.split("/")
        if len(parts) == 2:
            return cls(unseg(parts[0].encode()), unseg(parts[1].encode()))
        if len(parts) == 3 and parts[2].isdigit():
            return cls(unseg(parts[0].encode()), unseg(parts[1].encode()), int(parts[2]))
        return None


def default_min_insync(members: int) -> int:
    """A majority (2 of 3, 2 of 2, 3 of 4...): Raft's quorum."""
    return members // 2 + 1


def key_of(kind: str, name: LogName) -> str:
    return kind + name.id


def split_key(key: str | bytes) -> tuple[str, str] | None:
    """(kind prefix, log id) of a key under ``replica/``, None for anything else."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    for kind in KINDS:
        if key.startswith(kind):
            return kind, key[len(kind):]
    return None


def _load(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _names(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        return None
    return tuple(value)


def encode_node(node: str) -> bytes:
    """A leader or transfer value."""
    return json.dumps({"node": node}, separators=(",", ":")).encode()


def decode_node(raw: bytes, field: str = "node") -> str | None:
    data = _load(raw)
    node = None if data is None else data.get(field)
    return node if isinstance(node, str) else None


def encode_transfer(to: str) -> bytes:
    return json.dumps({"to": to}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class IsrRecord:
    """The replica set and its in-sync members, as last written."""

    members: tuple[str, ...]
    isr: tuple[str, ...]
    epoch: int = 0  # of the leader that wrote it (0: written at creation or by an operator)

    def encode(self) -> bytes:
        return json.dumps({"members": list(self.members), "isr": list(self.isr),
                           "epoch": self.epoch}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> IsrRecord | None:
        data = _load(raw)
        if data is None:
            return None
        members, isr, epoch = _names(data.get("members")), _names(data.get("isr")), data.get("epoch", 0)
        if members is None or isr is None or not isinstance(epoch, int):
            return None
        return cls(members, isr, epoch)


class Versioned(NamedTuple):
    """A key's value as of ``revision`` (its mod_revision; for an absent key, the
    revision it was seen absent at): newer knowledge replaces older, never the reverse."""

    value: bytes | None
    revision: int
    lease: int = 0
