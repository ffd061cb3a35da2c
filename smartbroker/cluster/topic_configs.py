"""Kafka topic configs of a stream, the same on every node that holds it (issue 16).

In Kafka a topic's configs are cluster-wide (the controller stores them): every replica
and every future leader uses them. Here each node holding a stream (a replicated or
spread one is held everywhere) keeps the configs in its own ``StreamMeta.overrides``, so
a change made by AlterConfigs (or CreateTopics' configs) on one node is also written to
etcd, ``stream_configs/<vhost>/<stream>`` = ``{"overrides": {...}}``, which every node
watches and applies to its copy (``set_overrides``, as AlterConfigs does: saved, retention
and segments follow, the replica sets' min-insync moves). A node down meanwhile applies
the record when it builds the stream again, so a failover's new leader serves the
altered configs (``min.insync.replicas`` among them).

The record goes when the stream's leader deletes the stream (Kafka deletes a topic's
configs with it). A stream deleted and declared again while a slow node still deletes
the old record loses the new one's altered configs: narrow, and documented.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from smartbroker.broker.policies import effective_policy
from smartbroker.cluster.definitions_keys import seg, unseg
from smartbroker.cluster.etcd_client import Delete, Put
from smartbroker.cluster.etcd_view import WatchedPrefix
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_admin import set_overrides

log = logging.getLogger("smartbroker.cluster")
PREFIX = b"stream_configs/"


def key(vhost: str, name: str) -> bytes:
    return PREFIX + seg(vhost) + b"/" + seg(name)


def parse_key(raw: bytes) -> tuple[str, str] | None:
    parts = raw[len(PREFIX):].split(b"/") if raw.startswith(PREFIX) else []
    return (unseg(parts[0]), unseg(parts[1])) if len(parts) == 2 else None


def decode(raw: bytes | None) -> dict[str, Any] | None:
    """The overrides a record holds; None for no record or a value that is not one."""
    if raw is None:
        return None
    try:
        overrides = json.loads(raw)["overrides"]
    except (ValueError, KeyError, TypeError):
        return None
    return overrides if isinstance(overrides, dict) else None


class TopicConfigs:
    """The watched ``stream_configs/`` records, applied to this node's streams."""

    def __init__(self, forwarding: Any, etcd: Any) -> None:
        self.forwarding = forwarding
        self.view = WatchedPrefix(etcd, PREFIX)
        self.view.subscribe(self._changed)

    async def open(self) -> TopicConfigs:
        await self.view.open()
        for host in list(self.forwarding.vhosts.values()):
            self.follow_deletes(host)
            for q in list(host.queues.values()):
                self.attach(q)
        return self

    def close(self) -> None:
        self.view.close()

    # -- writing ---------------------------------------------------------------------------
    def publish(self, stream: Any) -> Any:
        """``stream``'s overrides changed here (AlterConfigs, CreateTopics): its replica
        sets follow now, the other nodes through etcd. Returns the write's future (what
        the Kafka answer waits for), None when nothing was written."""
        changed(stream)
        if not isinstance(stream, StreamQueue):
            return None
        raw = json.dumps({"overrides": stream.meta.overrides}, sort_keys=True).encode()
        k = key(stream.vhost, stream.name)
        if self.view.get(k) == raw:
            return None
        self.view.write(Put(k, raw))
        return self.view.pending()

    # -- applying --------------------------------------------------------------------------
    def attach(self, q: Any) -> Any:
        """A queue built here (``queue_factory``): a stream takes the recorded configs."""
        if isinstance(q, StreamQueue) and not q.deleted:
            host = self.forwarding.vhosts.get(q.vhost)
            if host is not None:  # a vhost added since the start
                self.follow_deletes(host)
            overrides = decode(self.view.get(key(q.vhost, q.name)))
            if overrides is not None:
                self._apply(q, overrides)
        return q

    def _changed(self, k: bytes, old: bytes | None, new: bytes | None) -> None:
        names = parse_key(k)
        overrides = decode(new)
        if names is None or overrides is None:
            return  # a deleted record: the stream is being deleted too
        host = self.forwarding.vhosts.get(names[0])
        q = None if host is None else host.queues.get(names[1])
        if isinstance(q, StreamQueue) and not q.deleted:
            self._apply(q, overrides)

    def _apply(self, stream: StreamQueue, overrides: dict[str, Any]) -> None:
        if stream.meta.overrides == overrides:
            return
        host = self.forwarding.vhosts.get(stream.vhost)
        policy = None if host is None else effective_policy(host.policies, stream.name, "queue")
        try:
            set_overrides(stream, overrides, policy.definition if policy else None)
        except Exception as exc:  # a value this node refuses, a disk error: one line
            log.warning("configs of stream '%s' in vhost '%s' not applied: %s",
                        stream.name, stream.vhost, exc)
            return
        changed(stream)
        log.info("stream '%s' in vhost '%s' takes the configs altered on another node",
                 stream.name, stream.vhost)

    # -- deleting --------------------------------------------------------------------------
    def follow_deletes(self, host: Any) -> None:
        if self.deleted not in host.on_queue_deleted:
            host.on_queue_deleted.append(self.deleted)

    def deleted(self, q: Any) -> None:
        """A stream deleted here: its leader (whose placement is gone already, or names
        it) deletes the record."""
        if not isinstance(q, StreamQueue):
            return
        k = key(q.vhost, q.name)
        if self.view.get(k) is None:
            return
        placement = self.forwarding.placement.get(q.vhost, q.name)
        if placement is None or placement.leader == self.forwarding.node:
            self.view.write(Delete(k))


def changed(stream: Any) -> None:
    """A replicated stream's min-insync follows ``min.insync.replicas`` at once."""
    refresh = getattr(getattr(stream, "replication", None), "configs_changed", None)
    if refresh is not None:
        refresh()


async def start(forwarding: Any, etcd: Any) -> TopicConfigs:
    return await TopicConfigs(forwarding, etcd).open()


__all__ = ["PREFIX", "TopicConfigs", "decode", "key", "start"]
