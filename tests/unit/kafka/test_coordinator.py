"""The classic group coordinator's state machine, driven through its Kafka handlers with a
fake clock: requests are encoded and decoded as a client sends and reads them, and no
timer runs unless the test advances the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.kafka import codec
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.coordinator import Coordinator
from smartbroker.kafka.errors import ErrorCode as E
from smartbroker.kafka.groups import valid_group_id
from smartbroker.kafka.handlers import KafkaHandlers, Node, Session
from smartbroker.kafka.join import HEARTBEAT, JOIN_GROUP, LEAVE_GROUP, SYNC_GROUP, GroupMembership
from smartbroker.kafka.membership import encode_assignment, encode_subscription
from tests.unit.kafka.kafka_fixtures import THREE_PARTITIONS, broker_with

SESSION = Session("127.0.0.1:50000", "127.0.0.1")
DELAY_MS = 3000  # the initial rebalance delay these tests use (Kafka's default)
# a second member joining during the delay extends it by one more delay (Kafka's
# InitialDelayedJoin), so a group of several members completes its first join after two
TWO_DELAYS = 2 * DELAY_MS
SUB = encode_subscription(["orders"])


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    now: float = 0.0
    timers: list[_Timer] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, ms: float) -> None:
        """Run every timer due within ``ms``, in time order, then stand at the end."""
        end = self.now + ms / 1000
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = end


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS})


@dataclass
class Env:
    clock: FakeClock
    coordinator: Coordinator
    handlers: KafkaHandlers
    loop: asyncio.AbstractEventLoop

    def call(self, api_key: int, version: int, **fields: Any) -> Any:
        """The answer as a client decodes it, or the pending future (``answer`` reads it)."""
        body = codec.REQUESTS[api_key](version=version, **fields)
        resp = self.handlers.handle(Request(Header(api_key, version, 7, "client"), body), SESSION)
        return resp if isinstance(resp, asyncio.Future) else decode(api_key, version, resp)


def decode(api_key: int, version: int, resp: Any) -> Any:
    wire = codec.encode_response(api_key, version, 7, resp)
    return codec.response_class(api_key).decode(wire[4:], version=version, header=True)


def answer(future: Any, api_key: int, version: int) -> Any:
    """A waiting request's answer (or one that came at once, already decoded)."""
    if not isinstance(future, asyncio.Future):
        return future
    assert future.done(), "still waiting"
    return decode(api_key, version, future.result())


@pytest.fixture
def env(broker: Broker) -> Iterator[Env]:
    clock = FakeClock()
    loop = asyncio.new_event_loop()  # futures only: it never runs
    coordinator = Coordinator(clock, initial_delay_ms=DELAY_MS)
    h = KafkaHandlers(broker, Node(None, 19092, Node.cluster_id_for("x"), "/"))
    # the handlers' group APIs over this coordinator and clock
    h.groups.coordinator = h.coordinator = coordinator
    coordinator.watchers.append(h.groups._show_members)
    membership = GroupMembership(coordinator, valid_group_id, loop.create_future,
                                 h.groups.membership.allowed)
    h.table.update({JOIN_GROUP: membership.join_group, SYNC_GROUP: membership.sync_group,
                    HEARTBEAT: membership.heartbeat, LEAVE_GROUP: membership.leave_group})
    yield Env(clock, coordinator, h, loop)
    loop.close()


def join(env: Env, member: str = "", version: int = 7, group: str = "g",
         instance: str | None = None, protocols: list[tuple[str, bytes]] | None = None,
         protocol_type: str = "consumer", session_ms: int = 10000,
         rebalance_ms: int = 20000) -> Any:
    cls = codec.REQUESTS[JOIN_GROUP]
    return env.call(JOIN_GROUP, version, group_id=group, session_timeout_ms=session_ms,
                    rebalance_timeout_ms=rebalance_ms, member_id=member,
                    group_instance_id=instance, protocol_type=protocol_type, reason=None,
                    protocols=[cls.JoinGroupRequestProtocol(name=n, metadata=m)
                               for n, m in (protocols if protocols is not None
                                            else [("range", SUB)])])


def new_member(env: Env, **kwargs: Any) -> tuple[str, Any]:
    """A v4+ dynamic member: MEMBER_ID_REQUIRED, then the join with that id (pending)."""
    first = join(env, **kwargs)
    assert first.error_code == E.MEMBER_ID_REQUIRED and first.member_id
    return first.member_id, join(env, member=first.member_id, **kwargs)


def sync(env: Env, member: str, generation: int, assignments: dict[str, bytes] | None = None,
         version: int = 5, group: str = "g", instance: str | None = None) -> Any:
    cls = codec.REQUESTS[SYNC_GROUP]
    return env.call(SYNC_GROUP, version, group_id=group, generation_id=generation,
                    member_id=member, group_instance_id=instance, protocol_type="consumer",
                    protocol_name="range", assignments=[
                        cls.SyncGroupRequestAssignment(member_id=m, assignment=a)
                        for m, a in (assignments or {}).items()])


def heartbeat(env: Env, member: str, generation: int, instance: str | None = None) -> int:
    return env.call(HEARTBEAT, 4, group_id="g", generation_id=generation, member_id=member,
                    group_instance_id=instance).error_code


def two_stable_members(env: Env) -> tuple[str, str, int]:
    """Two members through the initial delay, join and sync: (leader, follower, gen)."""
    a, fa = new_member(env)
    b, fb = new_member(env)
    env.clock.advance(TWO_DELAYS)
    ra, rb = answer(fa, JOIN_GROUP, 7), answer(fb, JOIN_GROUP, 7)
    assert ra.generation_id == rb.generation_id == 1 and ra.leader == rb.leader == a
    assert sorted(m.member_id for m in ra.members) == sorted([a, b]) and rb.members == []
    follower = sync(env, b, 1)
    assert isinstance(follower, asyncio.Future) and not follower.done()
    leader = sync(env, a, 1, {a: encode_assignment({"orders": [0, 1]}),
                              b: encode_assignment({"orders": [2]})})
    assert leader.error_code == 0
    assert answer(follower, SYNC_GROUP, 5).assignment == encode_assignment({"orders": [2]})
    return a, b, 1


def test_first_join_v4_requires_a_member_id_and_v3_does_not(env: Env) -> None:
    first = join(env, version=4)
    assert (first.error_code, first.generation_id) == (E.MEMBER_ID_REQUIRED, -1)
    assert first.member_id.startswith("client-")
    pending = join(env, member=first.member_id, version=4)
    assert isinstance(pending, asyncio.Future) and not pending.done()  # the initial delay
    old = join(env, version=3, group="g3")
    assert isinstance(old, asyncio.Future)
    env.clock.advance(DELAY_MS)
    assert answer(old, JOIN_GROUP, 3).member_id.startswith("client-")
    assert answer(pending, JOIN_GROUP, 4).generation_id == 1


def test_leader_assigns_followers_wait_then_stable(env: Env) -> None:
    a, b, gen = two_stable_members(env)
    group = env.coordinator.group("g")
    assert group is not None and group.state == "Stable" and group.protocol_name == "range"
    assert group.topics() == {"orders"}
    assert group.assigned() == {a: {"orders": [0, 1]}, b: {"orders": [2]}}
    assert heartbeat(env, a, gen) == heartbeat(env, b, gen) == E.NONE
    assert heartbeat(env, a, gen + 1) == E.ILLEGAL_GENERATION
    assert heartbeat(env, "nobody", gen) == E.UNKNOWN_MEMBER_ID
    assert sync(env, b, gen).assignment == encode_assignment({"orders": [2]})  # again, at once
    # the stream shows the Kafka members (G2's external members)
    shown = env.handlers.broker.vhosts["/"].queues["orders"].groups.external_members("g")
    assert sorted(m.partitions for m in shown) == [(0, 1), (2,)]


def test_initial_delay_extends_with_each_new_member(env: Env) -> None:
    _, fa = new_member(env)
    env.clock.advance(DELAY_MS - 1)
    _, fb = new_member(env)  # added during the delay: one more delay, within the timeout
    env.clock.advance(2)
    assert not fa.done() and not fb.done()
    env.clock.advance(DELAY_MS)
    assert answer(fa, JOIN_GROUP, 7).generation_id == answer(fb, JOIN_GROUP, 7).generation_id == 1


def test_a_new_member_rebalances_and_the_join_completes_when_all_rejoined(env: Env) -> None:
    a, b, gen = two_stable_members(env)
    c, fc = new_member(env)
    assert not fc.done()
    assert heartbeat(env, a, gen) == E.REBALANCE_IN_PROGRESS
    assert sync(env, a, gen).error_code == E.REBALANCE_IN_PROGRESS
    fa = join(env, member=a)
    assert not fa.done()
    fb = join(env, member=b)  # the last one: complete now, no timer needed
    ra, rb, rc = (answer(f, JOIN_GROUP, 7) for f in (fa, fb, fc))
    assert ra.generation_id == rb.generation_id == rc.generation_id == gen + 1
    assert len(ra.members) == 3 and rb.members == rc.members == []


def test_a_member_that_does_not_rejoin_in_the_rebalance_timeout_is_removed(env: Env) -> None:
    a, b, gen = two_stable_members(env)
    fa = join(env, member=a)  # the leader rejoins: a rebalance
    for _ in range(6):  # b heartbeats (its session lives on) but never rejoins
        env.clock.advance(3000)
        assert heartbeat(env, b, gen) == E.REBALANCE_IN_PROGRESS
    env.clock.advance(1999)
    assert not fa.done()
    env.clock.advance(1)
    ra = answer(fa, JOIN_GROUP, 7)
    assert ra.generation_id == gen + 1 and [m.member_id for m in ra.members] == [a]
    assert heartbeat(env, b, gen) == E.UNKNOWN_MEMBER_ID


def test_session_timeout_removes_a_silent_member(env: Env) -> None:
    a, b, gen = two_stable_members(env)
    for _ in range(3):  # b's last word was its SyncGroup
        env.clock.advance(3000)
        assert heartbeat(env, a, gen) == E.NONE  # b stays silent
    env.clock.advance(1000)  # 10 s after b's SyncGroup
    group = env.coordinator.group("g")
    assert group is not None and b not in group.members and group.state == "PreparingRebalance"
    assert heartbeat(env, a, gen) == E.REBALANCE_IN_PROGRESS
    ra = join(env, member=a)
    assert ra.generation_id == gen + 1 and [m.member_id for m in ra.members] == [a]


def test_a_member_that_never_syncs_is_removed_after_the_rebalance_timeout(env: Env) -> None:
    a, fa = new_member(env)
    b, fb = new_member(env)
    env.clock.advance(TWO_DELAYS)
    sync(env, a, 1, {a: b"x", b: b"y"})  # the leader syncs, b never does
    for _ in range(7):
        env.clock.advance(3000)
        heartbeat(env, a, 1)
    group = env.coordinator.group("g")
    assert group is not None and list(group.members) == [a]


def test_leave_v0_and_batch_leave_v3(env: Env) -> None:
    a, b, gen = two_stable_members(env)
    assert env.call(LEAVE_GROUP, 0, group_id="g", member_id="nobody").error_code == \
        E.UNKNOWN_MEMBER_ID
    assert env.call(LEAVE_GROUP, 1, group_id="g", member_id=b).error_code == 0
    cls = codec.REQUESTS[LEAVE_GROUP]
    resp = env.call(LEAVE_GROUP, 3, group_id="g", members=[
        cls.MemberIdentity(member_id=a, group_instance_id=None),
        cls.MemberIdentity(member_id="x", group_instance_id=None)])
    assert resp.error_code == 0
    assert [(m.member_id, m.error_code) for m in resp.members] == [(a, 0), ("x", 25)]
    group = env.coordinator.group("g")
    assert group is not None and group.state == "Empty" and not group.members
    assert group.generation == gen + 1


def test_static_member_rejoins_without_a_rebalance(env: Env) -> None:
    fa = join(env, instance="i-a")  # static: no MEMBER_ID_REQUIRED
    fb = join(env, instance="i-b")
    env.clock.advance(TWO_DELAYS)
    ra, rb = answer(fa, JOIN_GROUP, 7), answer(fb, JOIN_GROUP, 7)
    a, b = ra.member_id, rb.member_id
    assert a.startswith("i-a-") and ra.leader == a
    sync(env, a, 1, {a: b"for-a", b: b"for-b"}, instance="i-a")
    assert sync(env, b, 1, instance="i-b").assignment == b"for-b"
    # b restarts: a new member id, same instance id and protocols
    rb2 = join(env, instance="i-b")
    assert rb2.error_code == 0 and rb2.generation_id == 1 and rb2.member_id != b
    assert rb2.leader == a and rb2.members == []
    assert heartbeat(env, a, 1, "i-a") == E.NONE  # no rebalance
    assert heartbeat(env, b, 1, "i-b") == E.FENCED_INSTANCE_ID  # the old id is fenced
    assert sync(env, rb2.member_id, 1, instance="i-b").assignment == b"for-b"
    # a static member leaves by instance id alone
    cls = codec.REQUESTS[LEAVE_GROUP]
    resp = env.call(LEAVE_GROUP, 4, group_id="g", members=[
        cls.MemberIdentity(member_id="", group_instance_id="i-b")])
    assert [m.error_code for m in resp.members] == [0]
    assert heartbeat(env, a, 1, "i-a") == E.REBALANCE_IN_PROGRESS


def test_inconsistent_protocols_and_bad_session_timeouts(env: Env) -> None:
    two_stable_members(env)
    assert join(env, protocol_type="connect").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(env, protocols=[("roundrobin", SUB)]).error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(env, protocols=[], group="other").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(env, session_ms=5999).error_code == E.INVALID_SESSION_TIMEOUT
    assert join(env, group="").error_code == E.INVALID_GROUP_ID
    assert join(env, member="m-1", group="unknown").error_code == E.UNKNOWN_MEMBER_ID


def test_protocol_selection_takes_the_most_preferred_common_one(env: Env) -> None:
    both = [("cooperative-sticky", SUB), ("range", SUB)]
    _, fa = new_member(env, protocols=both)
    _, fb = new_member(env, protocols=[("range", SUB), ("cooperative-sticky", SUB)])
    _, fc = new_member(env, protocols=both)
    env.clock.advance(TWO_DELAYS)
    assert answer(fa, JOIN_GROUP, 7).protocol_name == "cooperative-sticky"


def test_offset_commit_checks_member_and_generation(env: Env) -> None:
    from tests.unit.kafka.test_kafka_groups import commit

    a, fa = new_member(env)
    b, fb = new_member(env)
    env.clock.advance(TWO_DELAYS)
    h = env.handlers
    assert commit(h, "g", {"orders": {0: 5}}, generation=1, member=a) == {("orders", 0): 27}
    sync(env, a, 1, {a: b"", b: b""})
    assert commit(h, "g", {"orders": {0: 5}}, generation=1, member=a) == {("orders", 0): 0}
    assert commit(h, "g", {"orders": {0: 6}}, generation=2, member=a) == {("orders", 0): 22}
    assert commit(h, "g", {"orders": {0: 6}}, generation=1, member="x") == {("orders", 0): 25}
    assert commit(h, "g", {"orders": {0: 6}}) == {("orders", 0): 25}  # simple, group not empty
    assert h.broker.vhosts["/"].queues["orders"].groups.book.get("g", 0) == 5


def test_removing_a_group_cancels_its_timers(env: Env) -> None:
    _, fa = new_member(env)
    env.coordinator.remove("g")
    assert answer(fa, JOIN_GROUP, 7).error_code == E.COORDINATOR_NOT_AVAILABLE
    assert all(t.cancelled for t in env.clock.timers)
    assert env.coordinator.group("g") is None


def test_a_cancelled_answer_is_dropped_quietly(env: Env) -> None:
    """The connection closed while its JoinGroup waited: the member stays until its
    session times out, as in Kafka, and nothing raises."""
    a, fa = new_member(env)
    fa.cancel()
    env.clock.advance(DELAY_MS)
    group = env.coordinator.group("g")
    assert group is not None and a in group.members and group.state == "CompletingRebalance"
    env.clock.advance(20000)  # never syncs: removed
    assert not group.members and group.state == "Empty"


def test_a_user_who_may_read_nothing_may_not_use_groups(env: Env, broker: Broker) -> None:
    from tests.unit.kafka.test_kafka_groups import commit

    broker.permissions.set(Permission(broker.config.default_user, "/", read="^$"))
    assert join(env).error_code == E.GROUP_AUTHORIZATION_FAILED
    assert sync(env, "m", 1).error_code == E.GROUP_AUTHORIZATION_FAILED
    assert heartbeat(env, "m", 1) == E.GROUP_AUTHORIZATION_FAILED
    assert env.call(LEAVE_GROUP, 0, group_id="g", member_id="m").error_code == 30
    assert commit(env.handlers, "g", {"orders": {0: 1}}) == {("orders", 0): 30}
    assert env.coordinator.group("g") is None


@pytest.mark.parametrize("version", [7, 9])
def test_a_static_leader_rejoining_a_stable_group_does_not_assign(env: Env, version: int) -> None:
    """KIP-814: from v9 the leader hears it leads, with the members, and skip_assignment;
    before, the answer names the old leader id, so it does not think it leads."""
    fa = join(env, instance="i-a", version=version)
    fb = join(env, instance="i-b", version=version)
    env.clock.advance(TWO_DELAYS)
    a = answer(fa, JOIN_GROUP, version).member_id
    b = answer(fb, JOIN_GROUP, version).member_id
    sync(env, a, 1, {a: b"for-a", b: b"for-b"}, instance="i-a")
    again = join(env, instance="i-a", version=version)
    assert again.error_code == 0 and again.generation_id == 1 and again.member_id != a
    if version >= 9:
        assert (again.leader, again.skip_assignment) == (again.member_id, True)
        assert sorted(m.member_id for m in again.members) == sorted([again.member_id, b])
    else:
        assert (again.leader, again.members) == (a, [])
    assert heartbeat(env, b, 1, "i-b") == E.NONE  # no rebalance either way
    assert sync(env, again.member_id, 1, instance="i-a").assignment == b"for-a"
