"""FindCoordinator, OffsetCommit and OffsetFetch on the one committed-offset store, and
the group membership APIs (join.py) over this node's ``Coordinator``.

A Kafka group spans topics, but smartbroker keeps committed offsets per stream: a Kafka
group's offset for topic T partition p is stored in T's ``StreamGroups`` (its
``OffsetBook``) under the group id, exactly where an AMQP consumer group of that name on
T commits as it acks. So a group's offsets show up, per stream it committed on, in
``smartbroker groups list|describe|reset-offsets`` and ``/api/groups``, and an AMQP
``x-consumer-group`` consumer of that name resumes from the Kafka-committed offset (and
the other way round).

An OffsetCommit is checked as Kafka's GroupCoordinator checks it (``commit_check``): with
a member id or generation it must come from a current member of the current generation
(UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS while the group completes
a rebalance, FENCED_INSTANCE_ID); a "simple" commit (generation -1, no member, what
``assign()`` consumers send) is refused with UNKNOWN_MEMBER_ID for a group that has
members, Kafka ones or an active AMQP group of that name on the topic. The book holds
offsets only: a commit's metadata string is not kept, and OffsetFetch answers "" (Kafka's
"no metadata") and leader epoch -1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from smartbroker.kafka import codec, group_view
from smartbroker.kafka.authz import group_allowed, topic_allowed, topic_describable
from smartbroker.kafka.codec import Request
from smartbroker.kafka.coordinator import Coordinator
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.join import (
    HEARTBEAT,
    HEARTBEAT_VERSIONS,
    JOIN_GROUP,
    JOIN_VERSIONS,
    LEAVE_GROUP,
    LEAVE_VERSIONS,
    SYNC_GROUP,
    SYNC_VERSIONS,
    GroupMembership,
)
from smartbroker.kafka.membership import subscription_topics
from smartbroker.kafka.produce import PartitionError, Topics
from smartbroker.queues.groups import GroupActive, UnknownPartition

OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
COMMIT_VERSIONS = (2, 8)
FETCH_VERSIONS = (1, 8)
COORDINATOR_VERSIONS = (0, 4)
KEY_GROUP, KEY_TRANSACTION = 0, 1
# the membership APIs (join.py) and their versions, for handlers.SUPPORTED
MEMBERSHIP_VERSIONS: dict[int, tuple[int, int]] = {
    JOIN_GROUP: JOIN_VERSIONS, SYNC_GROUP: SYNC_VERSIONS, HEARTBEAT: HEARTBEAT_VERSIONS,
    LEAVE_GROUP: LEAVE_VERSIONS}
NO_OFFSET = -1
MAX_METADATA = 4096  # Kafka's offset.metadata.max.bytes (characters of the metadata string)


def valid_group_id(group: str | None) -> bool:
    """A group id the offset book can key: not empty (Kafka allows "" for offsets only,
    for old clients; smartbroker's groups need a name) and without NUL (the book's
    separator)."""
    return bool(group) and "\x00" not in group  # type: ignore[operator]


class GroupCoordinator:
    """The coordinator (this node) for every group, over the Kafka vhost's streams."""

    def __init__(self, topics: Topics, node_address: Any, stream_names: Any) -> None:
        self.topics = topics
        self.node_address = node_address  # session -> (node id, host, port), as Metadata says
        self.stream_names = stream_names  # () -> the Kafka vhost's topic names
        cfg = topics.broker.config
        self.coordinator = Coordinator(
            initial_delay_ms=cfg.kafka_initial_rebalance_delay_ms,
            session_timeout_ms=(cfg.kafka_group_min_session_timeout_ms,
                                cfg.kafka_group_max_session_timeout_ms))
        self.membership = GroupMembership(
            self.coordinator, valid_group_id,
            allowed=lambda group: group_allowed(topics.broker, topics.vhost, group))
        self.coordinator.watchers.append(self._show_members)
        # (group, topic, partition) -> whether an open transaction holds an offset for it
        # (the transaction coordinator's, wired by handlers.py): OffsetFetch with
        # require_stable answers UNSTABLE_OFFSET_COMMIT for it
        self.pending_txn_offset: Any = lambda group, topic, partition: False
        # cluster mode (handlers.attach_peers): a group is coordinated by the node leading
        # its topics (its offsets live in their streams), kafka/cluster.Peers
        self.peers: Any = None

    def _show_members(self, group: Any) -> None:
        """Let the streams a group subscribes to show its Kafka members (with lag) in
        ``smartbroker groups``, ``/api/groups`` and the dashboard (group_view.py)."""
        if group.members:
            group_view.link_streams(self.topics, lambda: self.coordinator, group.group_id,
                                    group.topics())

    def membership_table(self) -> dict[int, Any]:
        """api key -> handler of the membership APIs (MEMBERSHIP_VERSIONS's keys)."""
        m = self.membership
        return {JOIN_GROUP: self._join_group, SYNC_GROUP: m.sync_group,
                HEARTBEAT: m.heartbeat, LEAVE_GROUP: m.leave_group}

    def _join_group(self, request: Request, session: Any) -> Any:
        """A group's members come from one protocol at a time: while AMQP consumers hold
        the group on a stream, a Kafka member is INCONSISTENT_GROUP_PROTOCOL (Kafka's
        answer to a member whose protocol type differs from the group's)."""
        body = request.body
        if self.peers is not None and valid_group_id(body.group_id) \
                and self.peers.coordinated_elsewhere(body.group_id, _subscribed(body)):
            return _join_refused(request, ErrorCode.NOT_COORDINATOR)
        if not valid_group_id(body.group_id) or not group_view.amqp_holder(
                self.topics, body.group_id):
            return self.membership.join_group(request, session)
        return _join_refused(request, ErrorCode.INCONSISTENT_GROUP_PROTOCOL)

    # -- FindCoordinator -------------------------------------------------------------------

    def find_coordinator(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(FIND_COORDINATOR)
        body, version = request.body, request.api_version
        key_type = body.key_type if version >= 1 else KEY_GROUP
        here = self.node_address(session)
        if key_type in (KEY_GROUP, KEY_TRANSACTION):  # transactions too (txn_api.py)
            code, message = ErrorCode.NONE, None
        else:
            code, message = ErrorCode.INVALID_REQUEST, f"unknown coordinator key type {key_type}"

        def where(key: str) -> tuple[int, str, int]:
            if code != ErrorCode.NONE:
                return -1, "", -1
            if key_type == KEY_GROUP and self.peers is not None:  # transactions stay here
                return self.peers.coordinator(key) or here
            return here

        if version < 4:
            node_id, host, port = where(body.key)
            return cls(version=version, throttle_time_ms=0, error_code=code,
                       error_message=message, node_id=node_id, host=host, port=port)
        return cls(version=version, throttle_time_ms=0, coordinators=[
            cls.Coordinator(key=key, node_id=n, host=h, port=p, error_code=code,
                            error_message=message)
            for key in body.coordinator_keys for n, h, p in (where(key),)])

    # -- OffsetCommit ----------------------------------------------------------------------

    def offset_commit(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(OFFSET_COMMIT)
        topic_cls = cls.OffsetCommitResponseTopic
        part_cls = topic_cls.OffsetCommitResponsePartition
        body = request.body
        group = body.group_id
        refusal: ErrorCode | None = None
        if not valid_group_id(group):
            refusal = ErrorCode.INVALID_GROUP_ID
        elif not group_allowed(self.topics.broker, self.topics.vhost, group):
            refusal = ErrorCode.GROUP_AUTHORIZATION_FAILED
        elif self.peers is not None and self.peers.coordinated_elsewhere(
                group, [t.name for t in body.topics]):
            refusal = ErrorCode.NOT_COORDINATOR
        else:
            code = self.coordinator.commit_check(
                group, body.generation_id_or_member_epoch, body.member_id or "",
                getattr(body, "group_instance_id", None))
            refusal = None if code == ErrorCode.NONE else code
        simple = (body.generation_id_or_member_epoch < 0 and not body.member_id
                  and getattr(body, "group_instance_id", None) is None)
        answers = []
        waits: list[Any] = []  # replicated streams: their offsets logs' commits
        for topic in body.topics:
            codes = self._commit_topic(group, topic, refusal, simple, waits)
            answers.append(topic_cls(name=topic.name, partitions=[
                part_cls(partition_index=i, error_code=c) for i, c in codes]))
        response = cls(version=request.api_version, throttle_time_ms=0, topics=answers)
        return response if not waits else asyncio.ensure_future(_replicated(response, waits))

    def _commit_topic(self, group: str, topic: Any, refusal: ErrorCode | None,
                      simple: bool, waits: list[Any]) -> list[tuple[int, ErrorCode]]:
        parts = [(p.partition_index, p.committed_offset, p.committed_metadata or "",
                  _epoch(p)) for p in topic.partitions]
        if refusal is not None:
            return [(i, refusal) for i, *_ in parts]
        if not self._may_read(topic.name):
            return [(i, ErrorCode.TOPIC_AUTHORIZATION_FAILED) for i, *_ in parts]
        queue = self._stream(topic.name)
        if queue is None:
            return [(i, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) for i, *_ in parts]
        groups = queue.groups
        try:
            if simple:  # a member's commit was checked against the Kafka group instead
                groups.refuse_if_active(group, "committing")
        except GroupActive:  # the group's members are AMQP consumers
            return [(i, ErrorCode.UNKNOWN_MEMBER_ID) for i, *_ in parts]
        codes = []
        for index, offset, metadata, epoch in parts:
            if len(metadata) > MAX_METADATA:  # Kafka's offset.metadata.max.bytes
                codes.append((index, ErrorCode.OFFSET_METADATA_TOO_LARGE))
                continue
            try:
                groups.commit(group, index, offset, metadata, epoch)
            except UnknownPartition:
                codes.append((index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
            else:
                codes.append((index, ErrorCode.NONE))
        groups.make_commits_survive_crash()  # before the answer acknowledges them
        replication = getattr(queue, "replication", None)  # copied on several nodes
        wait = None if replication is None else replication.offsets_committed()
        if wait is not None:
            waits.append(wait)
        return codes

    # -- OffsetFetch -----------------------------------------------------------------------

    def offset_fetch(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(OFFSET_FETCH)
        body, version = request.body, request.api_version
        if version >= 8:
            group_cls = cls.OffsetFetchResponseGroup
            topic_cls = group_cls.OffsetFetchResponseTopics
            part_cls = topic_cls.OffsetFetchResponsePartitions
            groups = []
            for g in body.groups:
                code, topics = self._fetch_group(g.group_id, g.topics, topic_cls, part_cls,
                                                 bool(body.require_stable))
                groups.append(group_cls(group_id=g.group_id, topics=topics, error_code=code))
            return cls(version=version, throttle_time_ms=0, groups=groups)
        topic_cls = cls.OffsetFetchResponseTopic
        part_cls = topic_cls.OffsetFetchResponsePartition
        code, topics = self._fetch_group(body.group_id, body.topics, topic_cls, part_cls,
                                         version >= 7 and bool(body.require_stable))
        if code != ErrorCode.NONE and version < 2:  # no top-level error code before v2
            topics = [topic_cls(name=t.name, partitions=[
                part_cls(partition_index=i, committed_offset=NO_OFFSET, committed_leader_epoch=-1,
                         metadata="", error_code=code) for i in t.partition_indexes])
                for t in body.topics or ()]
        return cls(version=version, throttle_time_ms=0, error_code=code, topics=topics)

    def _fetch_group(self, group: str, wanted: Iterable[Any] | None, topic_cls: Any,
                     part_cls: Any, stable: bool = False) -> tuple[ErrorCode, list[Any]]:
        if not valid_group_id(group):
            return ErrorCode.INVALID_GROUP_ID, []
        if not group_allowed(self.topics.broker, self.topics.vhost, group):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, []
        if self.peers is not None and self.peers.coordinated_elsewhere(
                group, [t.name for t in wanted or ()]):
            return ErrorCode.NOT_COORDINATOR, []

        def part(index: int, offset: int | None, code: ErrorCode = ErrorCode.NONE,
                 extra: tuple[int, str] = (-1, "")) -> Any:
            return part_cls(partition_index=index,
                            committed_offset=NO_OFFSET if offset is None else offset,
                            committed_leader_epoch=extra[0], metadata=extra[1], error_code=code)

        answers = []
        if wanted is None:  # every topic the group has offsets in
            for name in self.stream_names():
                queue = self._stream(name)
                if queue is None or not topic_describable(self.topics.broker, self.topics.vhost,
                                                          name):
                    continue
                committed = queue.groups.book.partitions(group)
                if committed:
                    book = queue.groups.book
                    answers.append(topic_cls(name=name, partitions=[
                        part(i, o, ErrorCode.NONE, book.extra_of(group, i))
                        for i, o in sorted(committed.items())]))
            return ErrorCode.NONE, answers
        for topic in wanted:  # Kafka: OffsetFetch needs DESCRIBE on the topic
            if not topic_describable(self.topics.broker, self.topics.vhost, topic.name):
                answers.append(topic_cls(name=topic.name, partitions=[
                    part(i, None, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                    for i in topic.partition_indexes]))
                continue
            queue = self._stream(topic.name)
            parts = []
            for index in topic.partition_indexes:
                if queue is None or not queue.partitions.has(index):
                    # Kafka answers an unknown partition with no offset and no error
                    parts.append(part(index, None))
                elif stable and self.pending_txn_offset(group, topic.name, index):
                    parts.append(part(index, None, ErrorCode.UNSTABLE_OFFSET_COMMIT))
                else:
                    book = queue.groups.book
                    parts.append(part(index, book.get(group, index), ErrorCode.NONE,
                                      book.extra_of(group, index)))
            answers.append(topic_cls(name=topic.name, partitions=parts))
        return ErrorCode.NONE, answers

    def _may_read(self, name: str) -> bool:
        """Committing a group's offsets of a topic needs ``read`` on it (authz.py; Kafka
        checks READ on the topic; group permissions do not exist here). Reading them
        needs any permission on it (``topic_describable``: Kafka's DESCRIBE)."""
        return topic_allowed(self.topics.broker, self.topics.vhost, "read", name)

    def _stream(self, name: str) -> Any:
        try:
            return self.topics.stream(name, create=False)
        except PartitionError:
            return None


def _subscribed(body: Any) -> list[str]:
    """The topics a consumer-protocol JoinGroup subscribes to (cluster mode: the group is
    coordinated by their leader, where its offsets live)."""
    if body.protocol_type != "consumer":
        return []
    return sorted({t for p in body.protocols or ()
                   for t in subscription_topics(bytes(p.metadata or b""))})


def _join_refused(request: Request, code: ErrorCode) -> Any:
    """A JoinGroup answered with ``code`` before the group sees it."""
    cls = codec.response_class(JOIN_GROUP)
    version = request.api_version
    return cls(version=version, throttle_time_ms=0, error_code=code, generation_id=-1,
               protocol_type=None, protocol_name=None if version >= 7 else "", leader="",
               skip_assignment=False, member_id=request.body.member_id or "", members=[])


def _epoch(partition: Any) -> int:
    """A committed partition's leader epoch (OffsetCommit v6+; -1 before, or unknown)."""
    epoch = getattr(partition, "committed_leader_epoch", None)
    return -1 if epoch is None else epoch


async def _replicated(response: Any, waits: list[Any]) -> Any:
    """An OffsetCommit answered once the replicated offsets logs hold it; a commit the
    replica set did not take (this node stopped leading the stream) is NOT_COORDINATOR,
    so the client finds the new coordinator and commits again."""
    try:
        await asyncio.gather(*waits)
    except Exception as exc:  # noqa: BLE001 - leadership lost, fenced, timed out
        logging.getLogger("smartbroker.kafka").warning("offset commit not replicated: %s", exc)
        for topic in response.topics:
            for part in topic.partitions:
                if part.error_code == ErrorCode.NONE:
                    part.error_code = ErrorCode.NOT_COORDINATOR
    return response
