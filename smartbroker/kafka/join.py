"""JoinGroup, SyncGroup, Heartbeat and LeaveGroup: Kafka requests in, the coordinator's
answers out (coordinator.py holds the state machine; this module only speaks the wire).

A JoinGroup or SyncGroup that has to wait for the rest of the group is answered with a
future; the listener writes it when it completes, keeping the connection's responses in
request order. If the connection closes first, the listener cancels the future and the
coordinator's answer goes nowhere: the member stays until its session times out, as in
Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.codec import Request
from smartbroker.kafka.coordinator import Coordinator, JoinRequest, JoinResult, SyncResult
from smartbroker.kafka.errors import ErrorCode

JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
JOIN_VERSIONS = (0, 9)
SYNC_VERSIONS = (0, 5)
HEARTBEAT_VERSIONS = (0, 4)
LEAVE_VERSIONS = (0, 5)


def _loop_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


class GroupMembership:
    """The four membership APIs over one ``Coordinator``."""

    def __init__(self, coordinator: Coordinator, valid_group_id: Callable[[Any], bool],
                 new_future: Callable[[], asyncio.Future[Any]] = _loop_future,
                 allowed: Callable[[str], bool] = lambda group: True) -> None:
        self.coordinator = coordinator
        self.valid_group_id = valid_group_id
        self.new_future = new_future  # unit tests pass a loop that is not running
        self.allowed = allowed  # group id -> may the connection's user use it (authz.py)

    def _refusal(self, group_id: Any) -> ErrorCode | None:
        if not self.valid_group_id(group_id):
            return ErrorCode.INVALID_GROUP_ID
        if not self.allowed(group_id):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED
        return None

    def _answer(self, build: Callable[[Any], Any]) -> tuple[Any, Callable[[Any], None]]:
        """A future and the callback that completes it with ``build(result)``; the body
        itself when the coordinator answered at once."""
        future = self.new_future()

        def respond(result: Any) -> None:
            if not future.done():  # cancelled: the connection closed
                future.set_result(build(result))
        return future, respond

    @staticmethod
    def _now_or_later(future: asyncio.Future[Any]) -> Any:
        return future.result() if future.done() and not future.cancelled() else future

    # -- JoinGroup -------------------------------------------------------------------------

    def join_group(self, request: Request, session: Any) -> Any:
        body, version = request.body, request.api_version
        cls = codec.response_class(JOIN_GROUP)

        def build(r: JoinResult) -> Any:
            name = r.protocol_name if r.protocol_name is not None or version >= 7 else ""
            return cls(version=version, throttle_time_ms=0, error_code=r.error,
                       generation_id=r.generation, protocol_type=r.protocol_type,
                       protocol_name=name, leader=r.leader_id, skip_assignment=r.skip_assignment,
                       member_id=r.member_id, members=[
                           cls.JoinGroupResponseMember(member_id=m, group_instance_id=i,
                                                       metadata=meta)
                           for m, i, meta in r.members])

        member_id = body.member_id or ""
        if (refusal := self._refusal(body.group_id)) is not None:
            return build(JoinResult(refusal, member_id))
        instance_id = body.group_instance_id if version >= 5 else None
        host = session.peer.rsplit(":", 1)[0]
        rebalance = body.rebalance_timeout_ms if version >= 1 else -1
        req = JoinRequest(
            group_id=body.group_id, member_id=member_id, instance_id=instance_id,
            client_id=request.header.client_id or "", client_host=f"/{host}",
            session_timeout_ms=body.session_timeout_ms,
            rebalance_timeout_ms=rebalance if rebalance > 0 else body.session_timeout_ms,
            protocol_type=body.protocol_type or "",
            protocols=[(p.name, bytes(p.metadata or b"")) for p in body.protocols],
            require_known_member_id=version >= 4, can_skip_assignment=version >= 9)
        future, respond = self._answer(build)
        self.coordinator.join(req, respond)
        return self._now_or_later(future)

    # -- SyncGroup -------------------------------------------------------------------------

    def sync_group(self, request: Request, session: Any) -> Any:
        body, version = request.body, request.api_version
        cls = codec.response_class(SYNC_GROUP)

        def build(r: SyncResult) -> Any:
            return cls(version=version, throttle_time_ms=0, error_code=r.error,
                       protocol_type=r.protocol_type, protocol_name=r.protocol_name,
                       assignment=r.assignment)

        if (refusal := self._refusal(body.group_id)) is not None:
            return build(SyncResult(refusal))
        instance_id = body.group_instance_id if version >= 3 else None
        protocol = (body.protocol_type, body.protocol_name) if version >= 5 else (None, None)
        assignments = {a.member_id: bytes(a.assignment or b"") for a in body.assignments or ()}
        future, respond = self._answer(build)
        self.coordinator.sync(body.group_id, body.generation_id, body.member_id or "",
                              instance_id, protocol, assignments, respond)
        return self._now_or_later(future)

    # -- Heartbeat -------------------------------------------------------------------------

    def heartbeat(self, request: Request, session: Any) -> Any:
        body, version = request.body, request.api_version
        cls = codec.response_class(HEARTBEAT)
        if (refusal := self._refusal(body.group_id)) is not None:
            code = refusal
        else:
            instance_id = body.group_instance_id if version >= 3 else None
            code = self.coordinator.heartbeat(body.group_id, body.generation_id,
                                              body.member_id or "", instance_id)
        return cls(version=version, throttle_time_ms=0, error_code=code)

    # -- LeaveGroup ------------------------------------------------------------------------

    def leave_group(self, request: Request, session: Any) -> Any:
        body, version = request.body, request.api_version
        cls = codec.response_class(LEAVE_GROUP)
        if version >= 3:
            leaving = [(m.member_id or "", m.group_instance_id) for m in body.members]
        else:
            leaving = [(body.member_id or "", None)]
        if (refusal := self._refusal(body.group_id)) is not None:
            top, codes = refusal, [refusal] * len(leaving)
        else:
            top, codes = ErrorCode.NONE, self.coordinator.leave(body.group_id, leaving)
        if version < 3:  # Kafka: before v3 the one member's error is the answer's
            return cls(version=version, throttle_time_ms=0,
                       error_code=top if top != ErrorCode.NONE else codes[0])
        if top != ErrorCode.NONE:
            return cls(version=version, throttle_time_ms=0, error_code=top, members=[])
        return cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE, members=[
            cls.MemberResponse(member_id=m, group_instance_id=i, error_code=c)
            for (m, i), c in zip(leaving, codes, strict=True)])
