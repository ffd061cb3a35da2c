"""Consumer groups on streams (smartbroker extension): assignment, commits, rebalance.

A group's members share the partitions, each partition owned by one member. What a user
sees, and what these tests assert: which member receives a partition's messages, at which
offsets a member starts, and the ``redelivered`` flag on messages handed over.
"""

from __future__ import annotations

import pytest
from stream_helpers import (
    Got,
    Reader,
    declare_stream,
    keys_by_partition,
    publish_keyed,
    pump_until,
    quiet,
)

from tests.integration.helpers import connect

pytestmark = pytest.mark.extension

Pos = tuple[int, int]


def member(readers, url: str, q: str, group: str, **kw) -> Reader:
    extra = kw.pop("args", {})
    args = {"x-consumer-group": group, "x-stream-offset": "first", **extra}
    return readers(url, q, args=args, **kw)


def probe(ch, q: str, members: list[Reader], parts: int, tag: str) -> dict[int, Reader]:
    """Publish one message per partition; return which member received each."""
    by_p = keys_by_partition(parts)
    publish_keyed(ch, q, [(by_p[p][0], f"{tag}-{p}") for p in range(parts)])
    want = {f"{tag}-{p}" for p in range(parts)}
    pump_until(members, lambda: want <= {b for m in members for b in m.bodies},
               what=f"probe {tag} delivered")
    owner = {}
    for m in members:
        for g in m.got:
            if g.text in want:
                assert g.partition not in owner, f"partition {g.partition} delivered twice"
                owner[g.partition] = m
    return owner


def owned(owner: dict[int, Reader], m: Reader) -> set[int]:
    return {p for p, o in owner.items() if o is m}


def fill(ch, q: str, parts: int, per: int) -> dict[Pos, str]:
    """``per`` messages into each of ``parts`` partitions (interleaved); position -> body."""
    by_p = keys_by_partition(parts)
    items = [(by_p[p][0], f"p{p}-{i}") for i in range(per) for p in range(parts)]
    publish_keyed(ch, q, items)
    return {(p, i): f"p{p}-{i}" for i in range(per) for p in range(parts)}


def positions(gots: list[Got]) -> list[Pos]:
    return [(g.partition, g.offset) for g in gots]


# --------------------------------------------------------------------- assignment


def test_members_share_partitions_and_extra_members_sit_idle(ch, stream, broker_url, uid, readers):
    q = stream(partitions=4)
    g = f"g-{uid}"
    a, b = (member(readers, broker_url, q, g) for _ in range(2))
    owner = probe(ch, q, [a, b], 4, "r1")
    assert len(owned(owner, a)) == 2 and len(owned(owner, b)) == 2

    c, d = (member(readers, broker_url, q, g) for _ in range(2))
    members = [a, b, c, d]
    owner = probe(ch, q, members, 4, "r2")
    assert sorted(len(owned(owner, m)) for m in members) == [1, 1, 1, 1]

    e = member(readers, broker_url, q, g)
    members.append(e)
    before = owner
    owner = probe(ch, q, members, 4, "r3")
    quiet(members)
    assert e.got == []  # the fifth member is idle
    assert owner == before  # and nobody moved

    # when a member leaves, the idle one takes its partition; the others keep theirs
    d.cancel()
    owner = probe(ch, q, [a, b, c, e], 4, "r4")
    assert owned(owner, e) == owned(before, d)
    for m in (a, b, c):
        assert owned(owner, m) == owned(before, m)


# --------------------------------------------------------------------- commits


def test_new_group_starts_at_x_stream_offset_default_next(ch, stream, broker_url, uid, readers):
    q = stream()
    fill(ch, q, 1, 5)
    m = readers(broker_url, q, args={"x-consumer-group": f"g-{uid}"})
    quiet([m])
    assert m.got == []
    fill(ch, q, 1, 1)
    pump_until([m], lambda: len(m.got) == 1)
    assert m.offsets == [5]


def test_commit_is_the_highest_contiguous_ack(ch, stream, broker_url, uid, readers):
    q = stream()
    fill(ch, q, 1, 5)  # offsets 0..4
    g = f"g-{uid}"
    first = member(readers, broker_url, q, g, ack=False)
    pump_until([first], lambda: len(first.got) == 5)
    for i in (0, 1, 3):
        first.ack_msg(first.got[i])
    first.close()  # acks 0, 1, 3 -> committed 2 (3 is not contiguous)

    second = member(readers, broker_url, q, g, ack=False)
    pump_until([second], lambda: len(second.got) == 3)
    quiet([second])
    assert second.offsets == [2, 3, 4]  # 2 and 3 again (3's ack did not commit), then 4
    assert all(g.redelivered for g in second.got)
    for got in second.got:
        second.ack_msg(got)
    second.close()

    third = member(readers, broker_url, q, g)
    quiet([third])
    assert third.got == []  # everything committed
    fill(ch, q, 1, 1)
    pump_until([third], lambda: len(third.got) == 1)
    assert third.offsets == [5] and not third.got[0].redelivered


def test_no_ack_commits_at_delivery(ch, stream, broker_url, uid, readers):
    q = stream(partitions=2)
    fill(ch, q, 2, 5)
    g = f"g-{uid}"
    first = member(readers, broker_url, q, g, auto_ack=True)
    pump_until([first], lambda: len(first.got) == 10)
    first.close()
    second = member(readers, broker_url, q, g)
    quiet([second])
    assert second.got == []  # at-most-once: delivered means committed
    fill(ch, q, 2, 1)
    pump_until([second], lambda: len(second.got) == 2)
    assert sorted(second.offsets) == [5, 5]


def test_groups_are_independent_of_each_other(ch, stream, broker_url, uid, readers):
    q = stream(partitions=2)
    fill(ch, q, 2, 5)
    a = member(readers, broker_url, q, f"ga-{uid}")
    b = member(readers, broker_url, q, f"gb-{uid}")
    plain = readers(broker_url, q, args={"x-stream-offset": "first"})
    pump_until([a, b, plain], lambda: all(len(m.got) == 10 for m in (a, b, plain)))
    assert sorted(positions(a.got)) == sorted(positions(b.got)) == sorted(positions(plain.got))


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_broker_restart_mid_work_resumes_from_committed(own_broker, uid, how):
    url = own_broker.url
    q, g = f"stream-{uid}", f"g-{uid}"
    with connect(url) as c:
        declare_stream(c.channel(), q, partitions=4)
    made: list[Reader] = []
    try:
        a, b = (Reader(url, q, args={"x-consumer-group": g, "x-stream-offset": "first"},
                       prefetch=100, ack=150) for _ in range(2))
        made += [a, b]
        with connect(url) as c:
            fill(c.channel(), q, 4, 250)  # 1000 messages
        pump_until([a, b], lambda: len(a.got) == 250 and len(b.got) == 250, timeout=15,
                   what="both members at credit")
        for m in (a, b):
            m.sync()  # the 300 acks have been processed
        acked = {pos for m in (a, b) for pos in positions(m.acked)}
        assert len(acked) == 300
        if how == "restart":
            own_broker.restart()
        else:
            own_broker.kill()
            own_broker.start()
        a2, b2 = (Reader(url, q, args={"x-consumer-group": g}, prefetch=100) for _ in range(2))
        made += [a2, b2]
        every = {(p, o) for p in range(4) for o in range(250)}
        after = lambda: {pos for m in (a2, b2) for pos in positions(m.got)}  # noqa: E731
        pump_until([a2, b2], lambda: every <= acked | after(), timeout=15, what="all consumed")
        for p in range(4):
            done = sorted(o for pp, o in acked if pp == p)
            assert done == list(range(len(done)))  # acks per partition were a prefix
            resumed = sorted(o for pp, o in after() if pp == p)
            if how == "restart":
                assert resumed[0] == len(done)  # exactly at the committed offset
            else:
                assert resumed[0] <= len(done)  # kill -9 may lose the newest commits
            assert resumed == list(range(resumed[0], 250))  # nothing skipped
    finally:
        for m in made:
            m.close()


# --------------------------------------------------------------------- rebalance


@pytest.mark.parametrize("leave,mode", [
    ("cancel", "cooperative"), ("channel_close", "cooperative"),
    ("connection_close", "cooperative"), ("heartbeat", "cooperative"),
    ("cancel", "eager"), ("connection_close", "eager"),
])
def test_member_leaving_with_unacked_messages_loses_nothing(ch, stream, broker_url, uid,
                                                            readers, leave, mode):
    q = stream(partitions=4)
    g = f"g-{uid}"
    rebalance = {"x-rebalance": mode}
    a = member(readers, broker_url, q, g, args=rebalance)
    b = member(readers, broker_url, q, g, args=rebalance, prefetch=20, ack=12,
               heartbeat=1 if leave == "heartbeat" else None)
    owner = probe(ch, q, [a, b], 4, "probe")
    a_parts, b_parts = owned(owner, a), owned(owner, b)
    assert len(a_parts) == len(b_parts) == 2
    per = 50
    fill(ch, q, 4, per)  # offsets 1..50 in every partition (0 is the probe)
    a_total = per * 2 + 2
    pump_until([a, b], lambda: len(a.got) == a_total and len(b.got) == 32, what="A done, B at credit")
    quiet([a, b], 0.2)
    assert len(b.got) == 32  # 12 acked, then 20 unacked: B holds all its credit
    b_unacked = set(positions(b.got)) - set(positions(b.acked))
    assert len(b_unacked) == 20

    if leave == "cancel":
        b.cancel()
    elif leave == "channel_close":
        b.ch.close()
    elif leave == "connection_close":
        b.close()
    # heartbeat: B's connection is simply never pumped again, so it stops answering
    every = {(p, o) for p in range(4) for o in range(per + 1)}
    pump_until([a], lambda: every <= set(positions(a.got)) | set(positions(b.acked)),
               timeout=10, what="every offset delivered and acked by someone")

    handed_over = a.got[a_total:]
    assert {g.partition for g in handed_over} <= b_parts | (a_parts if mode == "eager" else set())
    redelivered = {pos for pos, g in zip(positions(handed_over), handed_over, strict=True)
                   if g.redelivered}
    assert b_unacked <= redelivered  # B's unacked work went to A, flagged redelivered
    never_seen = set(positions(handed_over)) - set(positions(b.got)) - set(positions(a.got[:a_total]))
    for pos, got in zip(positions(handed_over), handed_over, strict=True):
        if pos in never_seen:
            assert not got.redelivered, pos  # first-time deliveries are not flagged
    # order still holds per partition in what A received after the handover
    for p in b_parts:
        offs = [g.offset for g in handed_over if g.partition == p]
        assert offs == sorted(offs) and offs[-1] == per
    acked_by_someone = set(positions(a.acked)) | set(positions(b.acked))
    assert every <= acked_by_someone


@pytest.mark.parametrize("mode", ["cooperative", "eager"])
def test_join_cooperative_moves_only_what_must_move(ch, stream, broker_url, uid, readers, mode):
    q = stream(partitions=4)
    g = f"g-{uid}"
    args = {"x-rebalance": mode}
    a = member(readers, broker_url, q, g, args=args, ack=False)
    fill(ch, q, 4, 8)
    pump_until([a], lambda: len(a.got) == 32)
    b = member(readers, broker_url, q, g, args=args, ack=False)
    pump_until([a, b], lambda: len(b.got) == 16, what="B got its two partitions")
    quiet([a, b])
    moved = {g.partition for g in b.got}
    assert len(moved) == 2 and all(g.redelivered for g in b.got)  # A's unacked, handed over
    kept = {0, 1, 2, 3} - moved
    if mode == "cooperative":
        assert len(a.got) == 32  # A's kept partitions were never revoked: no redelivery
    else:
        # eager: everything revoked first; A is handed its partitions back from the committed
        # offset and sees its own unacked messages again
        again = a.got[32:]
        assert {g.partition for g in again} == kept and len(again) == 16
        assert all(g.redelivered for g in again)
        assert sorted(positions(again)) == sorted(pos for pos in positions(a.got[:32]) if pos[0] in kept)


@pytest.mark.parametrize("mode", ["cooperative", "eager"])
def test_leave_cooperative_keeps_survivors_partitions(ch, stream, broker_url, uid, readers, mode):
    q = stream(partitions=4)
    g = f"g-{uid}"
    args = {"x-rebalance": mode}
    a, b, c = (member(readers, broker_url, q, g, args=args, ack=False) for _ in range(3))
    fill(ch, q, 4, 4)
    pump_until([a, b, c], lambda: sum(len(m.got) for m in (a, b, c)) == 16)
    mark = {m: len(m.got) for m in (b, c)}
    a_positions = set(positions(a.got))
    assert a_positions  # the first member owns partitions
    a.cancel()
    survivors = [b, c]
    want = a_positions if mode == "cooperative" else {(p, o) for p in range(4) for o in range(4)}
    new = lambda: {pos for m in survivors for pos in positions(m.got[mark[m]:])}  # noqa: E731
    pump_until(survivors, lambda: want <= new(), what="handover")
    quiet(survivors)
    assert new() == want  # cooperative: only A's; eager: everybody's unacked, again
    assert all(g.redelivered for m in survivors for g in m.got[mark[m]:])


# --------------------------------------------------------------------- static membership


def test_static_member_rejoining_within_session_timeout_keeps_its_partitions(
        ch, stream, broker_url, uid, readers):
    q = stream(partitions=4)
    g = f"g-{uid}"
    a = member(readers, broker_url, q, g, args={"x-group-instance-id": "a", "x-session-timeout": 10_000})
    b = member(readers, broker_url, q, g, args={"x-group-instance-id": "b", "x-session-timeout": 10_000})
    owner = probe(ch, q, [a, b], 4, "r1")
    a_parts, b_parts = owned(owner, a), owned(owner, b)
    a.close()

    by_p = keys_by_partition(4)
    publish_keyed(ch, q, [(by_p[p][0], f"away-{p}") for p in range(4)])
    pump_until([b], lambda: sum(t.startswith("away") for t in b.bodies) == 2)
    quiet([b])
    assert {g.partition for g in b.got if g.text.startswith("away")} == b_parts  # nothing moved

    a2 = member(readers, broker_url, q, g, args={"x-group-instance-id": "a", "x-session-timeout": 10_000})
    pump_until([a2, b], lambda: len(a2.got) == 2, what="A back")
    assert {g.partition for g in a2.got} == a_parts
    assert sorted(a2.bodies) == sorted(f"away-{p}" for p in a_parts)
    assert not any(g.redelivered for g in a2.got)
    owner = probe(ch, q, [a2, b], 4, "r2")
    assert owned(owner, a2) == a_parts and owned(owner, b) == b_parts


def test_static_member_partitions_reassigned_after_session_timeout(
        ch, stream, broker_url, uid, readers):
    q = stream(partitions=4)
    g = f"g-{uid}"
    a = member(readers, broker_url, q, g, args={"x-group-instance-id": "a", "x-session-timeout": 1500})
    b = member(readers, broker_url, q, g, args={"x-group-instance-id": "b", "x-session-timeout": 1500})
    owner = probe(ch, q, [a, b], 4, "r1")
    a_parts = owned(owner, a)
    a.close()
    by_p = keys_by_partition(4)
    publish_keyed(ch, q, [(by_p[p][0], f"away-{p}") for p in range(4)])
    took = pump_until([b], lambda: sum(t.startswith("away") for t in b.bodies) == 4, timeout=8,
                      what="B takes over after the session timeout")
    assert took > 0.5  # held for the session first, not reassigned at once
    assert {g.partition for g in b.got if g.text.startswith("away")} == {0, 1, 2, 3}
    assert {g.partition for g in b.got[2:] if g.text.startswith("away")} >= a_parts
    owner = probe(ch, q, [b], 4, "r2")
    assert owned(owner, b) == {0, 1, 2, 3}
