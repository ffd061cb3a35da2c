"""Kafka's classic group coordinator: JoinGroup, SyncGroup, Heartbeat and LeaveGroup as
transitions of ``KafkaGroup`` (membership.py), following Kafka's GroupCoordinator.

Requests drive these transitions (rebalance.py has those that timers drive):

* A new dynamic member of v4+ first gets MEMBER_ID_REQUIRED with its id (KIP-394), then
  joins with it; a join of a new member, or a changed subscription, or the leader's
  rejoin while Stable, starts a rebalance; a known member with nothing changed gets the
  current generation at once.
* SyncGroup: the leader's assignments complete the generation (CompletingRebalance ->
  Stable) and answer the members waiting in theirs.
* Heartbeat keeps a session alive; during a rebalance it says REBALANCE_IN_PROGRESS.
* LeaveGroup removes members (v3+: several, static ones by instance id) and rebalances;
  a closed connection removes nobody (the session timeout does).
* Static members (``group.instance.id``, KIP-345) that rejoin with a new member id replace
  their old id, fencing it; in a Stable group with unchanged protocols that is no rebalance.
* OffsetCommit's check (``commit_check``) is Kafka's validateOffsetCommit.

Answers that wait (JoinGroup, SyncGroup) are callbacks the handlers turn into futures.
State is in memory: after a restart members get UNKNOWN_MEMBER_ID and rejoin (committed
offsets are durable, in the streams' books), as when a Kafka coordinator moves.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.membership import (
    COMPLETING,
    DEAD,
    EMPTY,
    PREPARING,
    STABLE,
    KafkaGroup,
    KafkaMember,
)
from smartbroker.kafka.rebalance import (
    NEW_MEMBER_JOIN_TIMEOUT_MS,
    JoinResult,
    LoopTimers,
    Rebalance,
    SyncResult,
    Timers,
    guarded,
)

__all__ = ["Coordinator", "JoinRequest", "JoinResult", "KafkaGroup", "KafkaMember",
           "LoopTimers", "SyncResult", "Timers"]

MIN_SESSION_TIMEOUT_MS = 6000  # Kafka's group.min.session.timeout.ms default
MAX_SESSION_TIMEOUT_MS = 1800000  # group.max.session.timeout.ms


@dataclass(frozen=True)
class JoinRequest:
    """What a JoinGroup asks, whatever its version."""

    group_id: str
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    require_known_member_id: bool  # v4+: MEMBER_ID_REQUIRED first
    can_skip_assignment: bool = False  # v9+: KIP-814


class Coordinator:
    """Every Kafka group of this node, in memory (committed offsets are durable, in the
    streams' books; members rejoin after a restart, as they do when a coordinator moves)."""

    def __init__(self, timers: Timers | None = None, initial_delay_ms: int = 3000,
                 session_timeout_ms: tuple[int, int] = (MIN_SESSION_TIMEOUT_MS,
                                                        MAX_SESSION_TIMEOUT_MS)) -> None:
        self.groups: dict[str, KafkaGroup] = {}
        # the session timeouts JoinGroup accepts (Kafka's group.min/max.session.timeout.ms)
        self.session_timeout_ms = session_timeout_ms
        self.timers: Timers = timers or LoopTimers()
        self.rebalance = Rebalance(self.timers, initial_delay_ms)
        # called with a group whenever its members or their assignment change
        self.watchers = self.rebalance.watchers

    def group(self, group_id: str) -> KafkaGroup | None:
        return self.groups.get(group_id)

    def remove(self, group_id: str) -> None:
        """Forget a group (DeleteGroups of an Empty or Dead one): Dead, timers cancelled,
        anyone still waiting answered COORDINATOR_NOT_AVAILABLE so they rediscover it."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        group.state = DEAD
        for member in list(group.members.values()):
            self.rebalance.drop(group, member, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        for timer in (*group.pending.values(), group.join_timer, group.sync_timer):
            if timer is not None:
                timer.cancel()
        group.pending.clear()
        self.rebalance.changed(group)

    # -- JoinGroup -------------------------------------------------------------------------

    def join(self, req: JoinRequest, respond: Callable[[JoinResult], None]) -> None:
        """Answer ``respond`` now (an error, MEMBER_ID_REQUIRED, a known member's current
        generation) or when the rebalance completes."""
        def fail(code: ErrorCode) -> None:
            respond(JoinResult(code, req.member_id))

        low, high = self.session_timeout_ms
        if not low <= req.session_timeout_ms <= high:
            return fail(ErrorCode.INVALID_SESSION_TIMEOUT)
        group = self.groups.get(req.group_id)
        if group is None:
            if req.member_id:  # Kafka: a known member id of an unknown group
                return fail(ErrorCode.UNKNOWN_MEMBER_ID)
            group = self.groups[req.group_id] = KafkaGroup(req.group_id)
        names = [n for n, _ in req.protocols]
        if not group.supports(req.protocol_type, names):
            return fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if not req.member_id:
            return self._join_unknown(group, req, respond)
        return self._join_known(group, req, respond)

    def _join_unknown(self, group: KafkaGroup, req: JoinRequest,
                      respond: Callable[[JoinResult], None]) -> None:
        prefix = req.instance_id if req.instance_id is not None else req.client_id
        member_id = f"{prefix}-{uuid.uuid4()}"
        if req.instance_id is not None:
            old = group.static.get(req.instance_id)
            if old is not None and old in group.members:
                return self._replace_static(group, old, member_id, req, respond)
        elif req.require_known_member_id:
            # KIP-394: the member comes back with this id; forgotten after a session
            group.pending[member_id] = self.timers.call_later(
                req.session_timeout_ms / 1000,
                guarded(lambda: self._expire_pending(group, member_id)))
            return respond(JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id))
        self._add_member(group, member_id, req, respond)

    def _join_known(self, group: KafkaGroup, req: JoinRequest,
                    respond: Callable[[JoinResult], None]) -> None:
        member_id = req.member_id
        if member_id in group.pending:
            group.pending.pop(member_id).cancel()
            return self._add_member(group, member_id, req, respond)
        code = self._check_member(group, member_id, req.instance_id)
        if code != ErrorCode.NONE:
            return respond(JoinResult(code, member_id))
        member = group.members[member_id]
        if group.state == PREPARING:
            return self._update_member(group, member, req, respond)
        if group.state == COMPLETING and member.matches(req.protocols):
            # the answer was lost: the same one again (the leader gets the members again)
            self.rebalance.heartbeat(group, member)
            return respond(self.rebalance.join_result(group, member_id))
        if group.state == STABLE and member_id != group.leader_id \
                and member.matches(req.protocols):
            self.rebalance.heartbeat(group, member)
            return respond(self.rebalance.join_result(group, member_id, with_members=False))
        self._update_member(group, member, req, respond)  # a changed subscription, or the leader

    def _add_member(self, group: KafkaGroup, member_id: str, req: JoinRequest,
                    respond: Callable[[JoinResult], None]) -> None:
        member = KafkaMember(member_id, req.instance_id, req.client_id, req.client_host,
                             req.session_timeout_ms, req.rebalance_timeout_ms,
                             req.protocol_type, list(req.protocols), is_new=True,
                             awaiting_join=respond)
        if not group.members:
            group.protocol_type = req.protocol_type
        group.members[member_id] = member
        if req.instance_id is not None:
            group.static[req.instance_id] = member_id
        if group.leader_id is None:
            group.leader_id = member_id
        if group.state == PREPARING and group.generation == 0:
            group.new_member_added = True
        self.rebalance.heartbeat(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self.rebalance.prepare(group)
        self.rebalance.try_complete_join(group)

    def _update_member(self, group: KafkaGroup, member: KafkaMember, req: JoinRequest,
                       respond: Callable[[JoinResult], None]) -> None:
        member.protocols = list(req.protocols)
        member.session_timeout_ms = req.session_timeout_ms
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        if member.awaiting_join is not None:  # a second join replaces the first (Kafka too)
            member.awaiting_join(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member.member_id))
        member.awaiting_join = respond
        self.rebalance.heartbeat(group, member)
        self.rebalance.prepare(group)
        self.rebalance.try_complete_join(group)

    def _replace_static(self, group: KafkaGroup, old_id: str, new_id: str, req: JoinRequest,
                        respond: Callable[[JoinResult], None]) -> None:
        """KIP-345: the instance's new member id takes the old one's place; whoever still
        waits under the old id is fenced. No rebalance when Stable and nothing changed."""
        member = group.members.pop(old_id)
        self._fence_old(member)
        if member.heartbeat is not None:
            member.heartbeat.cancel()
        leader = group.leader_id
        member.member_id = new_id
        group.members[new_id] = member
        group.static[req.instance_id] = new_id  # type: ignore[index]
        group.pending_sync.discard(old_id)
        if group.leader_id == old_id:
            group.leader_id = new_id
        unchanged = member.matches(req.protocols)
        member.client_id, member.client_host = req.client_id, req.client_host
        member.session_timeout_ms = req.session_timeout_ms
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.protocols = list(req.protocols)
        self.rebalance.heartbeat(group, member)
        if group.state == STABLE and (unchanged or group.select_protocol() == group.protocol_name):
            self.rebalance.changed(group)
            if leader == old_id and req.can_skip_assignment:
                # KIP-814 (v9+): the leader learns it leads, with the members, but must
                # not assign (a Stable group would not pass a new assignment on)
                result = self.rebalance.join_result(group, new_id)
                return respond(dataclasses.replace(result, skip_assignment=True))
            # before v9 the old leader id is kept in the answer, so a leader replaced this
            # way does not assign at all (as Kafka does)
            return respond(JoinResult(ErrorCode.NONE, new_id, group.generation,
                                      group.protocol_type, group.protocol_name,
                                      old_id if leader == old_id else leader or ""))
        member.awaiting_join = respond
        if group.state == PREPARING:
            self.rebalance.try_complete_join(group)
        else:
            self.rebalance.prepare(group)

    @staticmethod
    def _fence_old(member: KafkaMember) -> None:
        if member.awaiting_join is not None:
            join, member.awaiting_join = member.awaiting_join, None
            join(JoinResult(ErrorCode.FENCED_INSTANCE_ID, member.member_id))
        if member.awaiting_sync is not None:
            sync, member.awaiting_sync = member.awaiting_sync, None
            sync(SyncResult(ErrorCode.FENCED_INSTANCE_ID))

    # -- SyncGroup -------------------------------------------------------------------------

    def sync(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
             protocol: tuple[str | None, str | None], assignments: dict[str, bytes],
             respond: Callable[[SyncResult], None]) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return respond(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        code = self._check_member(group, member_id, instance_id)
        if code == ErrorCode.NONE and generation != group.generation:
            code = ErrorCode.ILLEGAL_GENERATION
        protocol_type, protocol_name = protocol
        if code == ErrorCode.NONE and (
                (protocol_type is not None and protocol_type != group.protocol_type)
                or (protocol_name is not None and protocol_name != group.protocol_name)):
            code = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if code == ErrorCode.NONE and group.state == EMPTY:
            code = ErrorCode.UNKNOWN_MEMBER_ID
        if code == ErrorCode.NONE and group.state == PREPARING:
            code = ErrorCode.REBALANCE_IN_PROGRESS
        if code != ErrorCode.NONE:
            return respond(SyncResult(code))
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        self.rebalance.heartbeat(group, member)
        if group.state == STABLE:
            return respond(self._sync_result(group, member))
        if member.awaiting_sync is not None:
            member.awaiting_sync(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        member.awaiting_sync = respond
        if member_id != group.leader_id:
            return
        for m in group.members.values():  # members the leader left out get nothing
            m.assignment = assignments.get(m.member_id, b"")
        group.state = STABLE
        for m in group.members.values():
            if m.awaiting_sync is not None:
                answer, m.awaiting_sync = m.awaiting_sync, None
                answer(self._sync_result(group, m))
        self.rebalance.changed(group)

    @staticmethod
    def _sync_result(group: KafkaGroup, member: KafkaMember) -> SyncResult:
        return SyncResult(ErrorCode.NONE, group.protocol_type, group.protocol_name,
                          member.assignment)

    # -- Heartbeat, LeaveGroup, OffsetCommit's check ---------------------------------------

    def heartbeat(self, group_id: str, generation: int, member_id: str,
                  instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None or group.state == EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        code = self._check_member(group, member_id, instance_id)
        if code == ErrorCode.NONE and generation != group.generation:
            code = ErrorCode.ILLEGAL_GENERATION
        if code != ErrorCode.NONE:
            return code
        self.rebalance.heartbeat(group, group.members[member_id])
        return ErrorCode.REBALANCE_IN_PROGRESS if group.state == PREPARING else ErrorCode.NONE

    def leave(self, group_id: str, leaving: list[tuple[str, str | None]]) -> list[ErrorCode]:
        """One code per (member id, instance id) leaving; v3+ may name a static member by
        its instance id alone."""
        group = self.groups.get(group_id)
        codes = []
        for member_id, instance_id in leaving:
            if group is None:
                codes.append(ErrorCode.UNKNOWN_MEMBER_ID)
                continue
            if not member_id and instance_id is not None:
                member_id = group.static.get(instance_id, "")
            if member_id in group.pending:
                group.pending.pop(member_id).cancel()
                self.rebalance.try_complete_join(group)
                codes.append(ErrorCode.NONE)
                continue
            code = self._check_member(group, member_id, instance_id)
            codes.append(code)
            if code == ErrorCode.NONE:
                self.rebalance.drop(group, group.members[member_id], ErrorCode.UNKNOWN_MEMBER_ID)
                self.rebalance.after_removal(group)
        return codes

    def commit_check(self, group_id: str, generation: int, member_id: str,
                     instance_id: str | None) -> ErrorCode:
        """Kafka's validateOffsetCommit for a group commit (a simple commit, generation < 0
        with no member, is NONE for a group without Kafka members)."""
        group = self.groups.get(group_id)
        simple = generation < 0 and not member_id and instance_id is None
        if group is None:
            return ErrorCode.NONE if generation < 0 and simple else (
                ErrorCode.ILLEGAL_GENERATION if generation >= 0 else ErrorCode.UNKNOWN_MEMBER_ID)
        if simple:
            return ErrorCode.NONE if group.state == EMPTY else ErrorCode.UNKNOWN_MEMBER_ID
        code = self._check_member(group, member_id, instance_id)
        if code != ErrorCode.NONE:
            return code
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state == COMPLETING:
            return ErrorCode.REBALANCE_IN_PROGRESS
        self.rebalance.heartbeat(group, group.members[member_id])
        return ErrorCode.NONE

    # -- members ---------------------------------------------------------------------------

    @staticmethod
    def _check_member(group: KafkaGroup, member_id: str, instance_id: str | None) -> ErrorCode:
        """Kafka's validateCurrentMember: a static member's id must be the instance's
        current one (FENCED_INSTANCE_ID), and the member must exist."""
        if group.state == DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if instance_id is not None and instance_id in group.static \
                and group.static[instance_id] != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def _expire_pending(self, group: KafkaGroup, member_id: str) -> None:
        if group.pending.pop(member_id, None) is not None:
            self.rebalance.try_complete_join(group)

