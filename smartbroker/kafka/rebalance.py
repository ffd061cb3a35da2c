"""The rebalance of a Kafka group: its timers and the transitions that no request
triggers directly (the initial delay running out, the rebalance timeout, a session
timeout, a generation completing), following Kafka's GroupCoordinator.

* From Empty, the first rebalance waits ``initial_delay_ms`` for more members, each new
  one extending it up to the rebalance timeout (Kafka's InitialDelayedJoin). Later ones
  wait until every member has rejoined, or the longest rebalance timeout, after which
  those that did not are removed (DelayedJoin).
* Completing a join starts a generation (CompletingRebalance): every waiting JoinGroup
  is answered, the leader's with all members' metadata. Members that do not send
  SyncGroup within the rebalance timeout are removed (Kafka 3.x).
* A session timeout removes a member, unless it is a known member waiting for the
  rebalance to complete (Kafka keeps those alive).

One timer per member (its session) plus at most two per group; every callback is
guarded, so a bug costs one log line, not the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.membership import (
    COMPLETING,
    EMPTY,
    PREPARING,
    STABLE,
    KafkaGroup,
    KafkaMember,
)

log = logging.getLogger("smartbroker.kafka")
NEW_MEMBER_JOIN_TIMEOUT_MS = 300000  # GroupCoordinator.NewMemberJoinTimeoutMs


class Timers(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        """Run ``callback`` after ``delay`` seconds; the result has ``cancel()``."""


class LoopTimers:
    """The running event loop's timers (the handlers run inside it)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(frozen=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    skip_assignment: bool = False  # KIP-814: a static leader rejoining a Stable group


@dataclass(frozen=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


class Rebalance:
    """The group transitions driven by timers, shared by every group of a coordinator."""

    def __init__(self, timers: Timers, initial_delay_ms: int) -> None:
        self.timers = timers
        self.initial_delay_ms = initial_delay_ms
        # called with a group whenever its members or their assignment change
        self.watchers: list[Callable[[KafkaGroup], None]] = []

    # -- the rebalance ---------------------------------------------------------------------

    def prepare(self, group: KafkaGroup) -> None:
        """Kafka's maybePrepareRebalance: from Empty, Stable or CompletingRebalance."""
        if group.state not in (EMPTY, STABLE, COMPLETING):
            return
        if group.state == COMPLETING:
            for member in group.members.values():
                if member.awaiting_sync is not None:
                    sync, member.awaiting_sync = member.awaiting_sync, None
                    sync(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        self.cancel(group, "sync_timer")
        group.pending_sync.clear()
        if group.state == EMPTY:
            delay = self.initial_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            group.initial_delay = True
            group.new_member_added = False
            self._join_timer(group, delay,
                             lambda: self._initial_delay_over(group, delay, remaining))
        else:
            group.initial_delay = False
            self._join_timer(group, group.rebalance_timeout_ms(),
                             lambda: self._join_expired(group))
        group.state = PREPARING
        self.changed(group)

    def _join_timer(self, group: KafkaGroup, delay_ms: int, callback: Callable[[], None]) -> None:
        self.cancel(group, "join_timer")
        group.join_timer = self.timers.call_later(delay_ms / 1000, guarded(callback))

    def _initial_delay_over(self, group: KafkaGroup, delay: int, remaining: int) -> None:
        group.join_timer = None
        if group.state != PREPARING:
            return
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            step = min(delay, remaining)
            left = max(remaining - step, 0)
            self._join_timer(group, step, lambda: self._initial_delay_over(group, delay, left))
            return
        self._join_expired(group)

    def try_complete_join(self, group: KafkaGroup) -> None:
        if group.state == PREPARING and not group.initial_delay and group.all_joined():
            self._complete_join(group)

    def _join_expired(self, group: KafkaGroup) -> None:
        """The rebalance timeout (or initial delay) is over: who has not rejoined is out."""
        group.join_timer = None
        if group.state != PREPARING:
            return
        for member in [m for m in group.members.values() if m.awaiting_join is None]:
            self.drop(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        self._complete_join(group)

    def _complete_join(self, group: KafkaGroup) -> None:
        self.cancel(group, "join_timer")
        group.initial_delay = False
        group.generation += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.state = EMPTY
            self.changed(group)
            return
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.state = COMPLETING
        group.pending_sync = set(group.members)
        for member in list(group.members.values()):
            answer, member.awaiting_join = member.awaiting_join, None
            member.is_new = False
            member.assignment = b""
            self.heartbeat(group, member)
            if answer is not None:
                answer(self.join_result(group, member.member_id))
        generation = group.generation
        self.cancel(group, "sync_timer")
        group.sync_timer = self.timers.call_later(
            group.rebalance_timeout_ms() / 1000,
            guarded(lambda: self._sync_expired(group, generation)))
        self.changed(group)

    def join_result(self, group: KafkaGroup, member_id: str,
                     with_members: bool = True) -> JoinResult:
        members = []
        if with_members and member_id == group.leader_id:
            name = group.protocol_name or ""
            members = [(m.member_id, m.group_instance_id, m.metadata(name))
                       for m in group.members.values()]
        return JoinResult(ErrorCode.NONE, member_id, group.generation, group.protocol_type,
                          group.protocol_name, group.leader_id or "", members)

    def _sync_expired(self, group: KafkaGroup, generation: int) -> None:
        """Kafka 3.x: members that never sent SyncGroup in time are removed."""
        group.sync_timer = None
        if group.generation != generation or group.state not in (COMPLETING, STABLE):
            return
        late = [group.members[i] for i in group.pending_sync if i in group.members]
        group.pending_sync.clear()
        for member in late:
            self.drop(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        if late:
            self.after_removal(group)

    def heartbeat(self, group: KafkaGroup, member: KafkaMember, timeout_ms: int = 0) -> None:
        """Restart the member's session timer."""
        if member.heartbeat is not None:
            member.heartbeat.cancel()
        member.heartbeat = self.timers.call_later(
            (timeout_ms or member.session_timeout_ms) / 1000,
            guarded(lambda: self._expire(group, member)))

    def _expire(self, group: KafkaGroup, member: KafkaMember) -> None:
        """A session timeout: out, unless it is a known member waiting for a rebalance to
        complete (Kafka keeps those alive)."""
        member.heartbeat = None
        if group.members.get(member.member_id) is not member:
            return
        if (member.awaiting_join is not None and not member.is_new) \
                or member.awaiting_sync is not None:
            return self.heartbeat(group, member)
        log.info("Kafka group %s: member %s left (session timeout %d ms)", group.group_id,
                 member.member_id, member.session_timeout_ms)
        self.drop(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        self.after_removal(group)

    def drop(self, group: KafkaGroup, member: KafkaMember, code: ErrorCode) -> None:
        """Remove a member, answering whatever it still waits for with ``code``."""
        group.members.pop(member.member_id, None)
        if member.group_instance_id is not None \
                and group.static.get(member.group_instance_id) == member.member_id:
            del group.static[member.group_instance_id]
        group.pending_sync.discard(member.member_id)
        if member.heartbeat is not None:
            member.heartbeat.cancel()
            member.heartbeat = None
        if member.awaiting_join is not None:
            join, member.awaiting_join = member.awaiting_join, None
            join(JoinResult(code, member.member_id))
        if member.awaiting_sync is not None:
            sync, member.awaiting_sync = member.awaiting_sync, None
            sync(SyncResult(code))
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def after_removal(self, group: KafkaGroup) -> None:
        """Kafka's removeMemberAndUpdateGroup."""
        if group.state in (STABLE, COMPLETING):
            self.prepare(group)
        elif group.state == PREPARING:
            self.try_complete_join(group)
        self.changed(group)

    @staticmethod
    def cancel(group: KafkaGroup, attr: str) -> None:
        timer = getattr(group, attr)
        if timer is not None:
            timer.cancel()
            setattr(group, attr, None)

    def changed(self, group: KafkaGroup) -> None:
        for watcher in self.watchers:
            try:
                watcher(group)
            except Exception as exc:  # a view's bug must not break the group
                log.error("Kafka group %s watcher failed: %s: %s", group.group_id,
                          type(exc).__name__, exc)




def guarded(callback: Callable[[], None]) -> Callable[[], None]:
    """A timer callback that logs one line instead of a loop traceback if it fails."""
    def run() -> None:
        try:
            callback()
        except Exception as exc:
            log.error("Kafka group timer failed: %s: %s", type(exc).__name__, exc)
            log.debug("group timer failure", exc_info=True)
    return run
