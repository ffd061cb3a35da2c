"""ListGroups, DescribeGroups, DeleteGroups and OffsetDelete over both protocols' groups.

The groups are ``group_view.GroupView``'s: Kafka groups of the coordinator, AMQP consumer
groups of the Kafka vhost's streams, and groups known only by committed offsets (listed
Empty, as Kafka lists a group whose offsets a "simple" consumer committed). Kafka's
GroupCoordinator rules, per group:

* DescribeGroups: an unknown group is described as Dead with no error (Kafka before
  DescribeGroups v6); member metadata and assignment only while Stable.
* DeleteGroups: NON_EMPTY_GROUP while it has members (Kafka's or AMQP's), GROUP_ID_NOT_FOUND
  when unknown, else its committed offsets go from every stream and the coordinator
  forgets it.
* OffsetDelete: GROUP_ID_NOT_FOUND when unknown; GROUP_SUBSCRIBED_TO_TOPIC for a topic the
  group's members consume (a Kafka member's subscription, or AMQP members of that
  stream); otherwise the partitions' committed offsets are deleted.

Authorization (``authz.py``; Kafka checks DESCRIBE or DELETE on the group, and groups have
no permissions of their own here): a group is visible and may be described only when
``group_allowed`` (the user may read something in the Kafka vhost); ListGroups leaves the
others out, as Kafka leaves out groups the caller may not describe. Deleting a group or
its offsets deletes committed offsets of topics, which needs ``read`` on every topic
concerned, as OffsetCommit does: GROUP_AUTHORIZATION_FAILED for DeleteGroups,
TOPIC_AUTHORIZATION_FAILED per partition for OffsetDelete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.authz import group_allowed, topic_allowed
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.group_view import DEAD, Coordinator, GroupView, group_watcher
from smartbroker.kafka.produce import Topics
from smartbroker.queues.groups import GroupError

DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS, OFFSET_DELETE = 15, 16, 42, 47
DESCRIBE_VERSIONS = (0, 5)
LIST_VERSIONS = (0, 5)
DELETE_VERSIONS = (0, 2)
OFFSET_DELETE_VERSIONS = (0, 0)
GROUP_TYPE = "classic"  # every group here runs the classic protocol (KIP-848 type names)
NO_AUTHORIZED_OPERATIONS = None  # the codec writes Kafka's "not provided" (INT32_MIN)
# Kafka's group operations (READ, DELETE, DESCRIBE), all of which group_allowed grants
GROUP_OPERATIONS = frozenset({3, 6, 8})


def _usable(group_id: str | None) -> bool:
    """A name a group can have here (the offset book cannot key "" or a NUL)."""
    return bool(group_id) and "\x00" not in group_id  # type: ignore[operator]


class GroupAdmin:
    """The four group administration APIs, over the Kafka vhost's groups."""

    def __init__(self, topics: Topics, coordinator: Callable[[], Coordinator | None]) -> None:
        self.topics = topics
        self.view = GroupView(topics, coordinator)
        self.coordinator = coordinator
        kafka = coordinator()
        if kafka is not None:  # Kafka members shown by the streams' group API
            kafka.watchers.append(group_watcher(topics, coordinator))

    def _group_allowed(self, group_id: str) -> bool:
        return group_allowed(self.topics.broker, self.topics.vhost, group_id)

    def _read_allowed(self, topic: str) -> bool:
        return topic_allowed(self.topics.broker, self.topics.vhost, "read", topic)

    # -- ListGroups ------------------------------------------------------------------------
    def list_groups(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(LIST_GROUPS)
        body, version = request.body, request.api_version
        states = {s.lower() for s in (getattr(body, "states_filter", None) or ())}
        types = {t.lower() for t in (getattr(body, "types_filter", None) or ())}
        listed = []
        if not types or GROUP_TYPE in types:
            for group_id in sorted(self.view.group_ids()):
                summary = self.view.summary(group_id) if self._group_allowed(group_id) else None
                if summary is None or (states and summary.state.lower() not in states):
                    continue
                listed.append(cls.ListedGroup(group_id=group_id,
                                              protocol_type=summary.protocol_type,
                                              group_state=summary.state, group_type=GROUP_TYPE))
        return cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE, groups=listed)

    # -- DescribeGroups --------------------------------------------------------------------
    def describe_groups(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(DESCRIBE_GROUPS)
        group_cls = cls.DescribedGroup
        member_cls = group_cls.DescribedGroupMember
        answers = []
        known = self.view.group_ids()  # one scan of the streams, not two per named group
        asked = request.api_version >= 3 and bool(request.body.include_authorized_operations)
        for group_id in request.body.groups or ():
            fields: dict[str, Any] = {"group_id": group_id, "error_code": ErrorCode.NONE,
                                      "group_state": DEAD, "protocol_type": "",
                                      "protocol_data": "", "members": [],
                                      "authorized_operations": NO_AUTHORIZED_OPERATIONS}
            if group_id is None:
                fields.update(group_id="", error_code=ErrorCode.INVALID_GROUP_ID, group_state="")
            elif not self._group_allowed(group_id):
                fields.update(error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, group_state="")
            else:
                summary = self.view.summary(group_id) if _usable(group_id) \
                    and group_id in known else None
                if asked:  # as Kafka: the set even for a group that does not exist
                    fields["authorized_operations"] = set(GROUP_OPERATIONS)
                if summary is not None:
                    fields.update(group_state=summary.state, protocol_type=summary.protocol_type,
                                  protocol_data=summary.protocol, members=[member_cls(
                                      member_id=m.member_id, group_instance_id=m.group_instance_id,
                                      client_id=m.client_id, client_host=m.client_host,
                                      member_metadata=m.metadata,
                                      member_assignment=m.assignment) for m in summary.members])
            answers.append(group_cls(**fields))
        return cls(version=request.api_version, throttle_time_ms=0, groups=answers)

    # -- DeleteGroups ----------------------------------------------------------------------
    def delete_groups(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(DELETE_GROUPS)
        known = self.view.group_ids()  # one scan of the streams, not two per named group
        results = [cls.DeletableGroupResult(group_id=g if g is not None else "",
                                            error_code=self._delete_group(g, known))
                   for g in request.body.groups_names or ()]
        return cls(version=request.api_version, throttle_time_ms=0, results=results)

    def _delete_group(self, group_id: str | None, known: set[str]) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        if not self._group_allowed(group_id):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED
        summary = self.view.summary(group_id) if _usable(group_id) and group_id in known else None
        if summary is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if summary.members or self.view.amqp_streams(group_id):
            return ErrorCode.NON_EMPTY_GROUP
        streams = self.view.offset_streams(group_id)
        if not all(self._read_allowed(name) for name, _ in streams):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED
        for _, queue in streams:
            try:
                queue.groups.delete(group_id)
            except GroupError:  # static AMQP members within their session timeout
                return ErrorCode.NON_EMPTY_GROUP
        for _, queue in self.view.streams():
            queue.groups.detach_external(group_id)
        coordinator = self.coordinator()
        if coordinator is not None and coordinator.group(group_id) is not None:
            coordinator.remove(group_id)
        return ErrorCode.NONE

    # -- OffsetDelete ----------------------------------------------------------------------
    def offset_delete(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(OFFSET_DELETE)
        topic_cls = cls.OffsetDeleteResponseTopic
        part_cls = topic_cls.OffsetDeleteResponsePartition
        body = request.body
        group_id = body.group_id
        if not _usable(group_id):
            code = ErrorCode.INVALID_GROUP_ID if group_id is None else ErrorCode.GROUP_ID_NOT_FOUND
        elif not self._group_allowed(group_id):
            code = ErrorCode.GROUP_AUTHORIZATION_FAILED
        elif self.view.summary(group_id) is None:
            code = ErrorCode.GROUP_ID_NOT_FOUND
        else:
            code = ErrorCode.NONE
        if code != ErrorCode.NONE:  # Kafka answers a group error alone, no topics
            return cls(version=request.api_version, error_code=code, throttle_time_ms=0,
                       topics=[])
        group = self.view.kafka_group(group_id)
        subscribed = group.topics() if group is not None and group.members else set()
        answers = []
        for topic in body.topics or ():
            indexes = [p.partition_index for p in topic.partitions]
            codes = self._delete_offsets(group_id, topic.name, indexes, subscribed)
            answers.append(topic_cls(name=topic.name, partitions=[
                part_cls(partition_index=i, error_code=c) for i, c in zip(indexes, codes, strict=True)]))
        return cls(version=request.api_version, error_code=ErrorCode.NONE, throttle_time_ms=0,
                   topics=answers)

    def _delete_offsets(self, group_id: str, topic: str, indexes: list[int],
                        subscribed: set[str]) -> list[ErrorCode]:
        if not self._read_allowed(topic):
            return [ErrorCode.TOPIC_AUTHORIZATION_FAILED] * len(indexes)
        queue = dict(self.view.streams()).get(topic)
        if queue is None:
            return [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION] * len(indexes)
        if topic in subscribed or queue.groups.amqp_active(group_id):
            return [ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC] * len(indexes)
        codes = []
        for index in indexes:
            if not queue.partitions.has(index):
                codes.append(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            queue.groups.forget_offsets(group_id, [index])
            codes.append(ErrorCode.NONE)
        return codes
