"""The replication core's sans-IO parts: ISR and high watermark arithmetic, names and
etcd values (bad values decode to None), the election's placement rewrite."""

from __future__ import annotations

from smartbroker.cluster.placement import Placement
from smartbroker.cluster.replication import isr
from smartbroker.cluster.replication.election import lead_placement
from smartbroker.cluster.replication.records import (
    ISR,
    LEADER,
    IsrRecord,
    LogName,
    decode_node,
    default_min_insync,
    encode_node,
    key_of,
    split_key,
)


def progress(**acked: int) -> dict[str, isr.Progress]:
    out = {}
    for node, offset in acked.items():
        p = out[node] = isr.Progress(node, 0.0)
        p.reset(offset)
    return out


def test_high_watermark_is_the_lowest_in_sync_end() -> None:
    p = progress(n2=80, n3=50)
    assert isr.high_watermark("n1", 100, p, {"n1", "n2", "n3"}) == 50
    assert isr.high_watermark("n1", 100, p, {"n1", "n2"}) == 80  # n3 out of the ISR
    assert isr.high_watermark("n1", 70, p, {"n1", "n2"}) == 70  # the leader's end bounds it
    assert isr.high_watermark("n1", 100, progress(n2=-1), {"n1", "n2"}) == 0  # unknown
    assert isr.high_watermark("n1", 100, {}, {"n1", "n4"}) == 0  # no progress at all
    assert isr.enough({"n1", "n2"}, 2) and not isr.enough({"n1"}, 2)
    assert [default_min_insync(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_lag_counts_from_the_last_time_a_follower_had_everything() -> None:
    p = isr.Progress("n2", now=0.0)
    p.reset(0)
    p.shipped(10, now=1.0)
    p.shipped(20, now=2.0)
    p.acknowledged(10, leader_end=20, now=3.0)  # had, at 3 s, what the leader had at 1 s
    assert p.caught_up_at == 1.0
    assert not p.lagging(20, now=5.0, lag=10.0) and p.lagging(20, now=11.5, lag=10.0)
    p.acknowledged(20, leader_end=20, now=12.0)
    assert p.caught_up_at == 12.0 and not p.lagging(20, now=30.0, lag=10.0)  # idle, not lagging


def test_who_leaves_and_who_comes_back() -> None:
    p = progress(n2=100, n3=40)
    p["n3"].caught_up_at = -20.0  # behind for 20 s
    members = ("n1", "n2", "n3", "n4")
    up = {"n1", "n2", "n3", "n4"}
    assert isr.to_drop("n1", ("n1", "n2", "n3"), members, 100, p, up, 0.0, 10.0) == ["n3"]
    assert isr.to_drop("n1", ("n1", "n2"), members, 100, p, up - {"n2"}, 0.0, 10.0) == ["n2"]
    assert isr.to_drop("n1", ("n1", "n2"), ("n1",), 100, p, up, 0.0, 10.0) == ["n2"]
    assert isr.to_drop("n1", ("n1", "n4"), members, 100, p, up, 0.0, 10.0) == ["n4"]  # never heard
    p["n2"].down_since = -0.5  # its link is down: it goes after a second, not a lease TTL
    assert isr.to_drop("n1", ("n1", "n2"), members, 100, p, up, 0.0, 10.0) == []
    assert isr.to_drop("n1", ("n1", "n2"), members, 100, p, up, 0.6, 10.0) == ["n2"]
    p.update(progress(n4=90))
    # back once it holds the high watermark and the leader's epoch start
    assert isr.to_add("n1", ("n1", "n2"), members, 90, 0, p, up) == ["n4"]
    assert isr.to_add("n1", ("n1", "n2"), members, 90, 95, p, up) == []
    assert isr.to_add("n1", ("n1", "n2"), members, 95, 0, p, up) == []
    assert isr.to_add("n1", ("n1", "n2"), members, 90, 0, p, up - {"n4"}) == []


def test_names_and_values() -> None:
    name = LogName("/", "a/b c")
    assert name.id == "%2F/a%2Fb%20c"
    assert LogName.parse(name.id) == name
    part = LogName("v", "s", 3)
    assert part.id == "v/s/3" and LogName.parse("v/s/3") == part
    assert LogName.parse("only-one") is None and LogName.parse("a/b/x") is None
    assert split_key(key_of(LEADER, part)) == (LEADER, "v/s/3")
    assert split_key("placement/v/s") is None
    assert decode_node(encode_node("n2")) == "n2"
    for bad in (b"", b"[]", b"{", b'{"node": 3}', b"\xff"):
        assert decode_node(bad) is None
        assert IsrRecord.decode(bad) is None
    record = IsrRecord(("n1", "n2", "n3"), ("n1", "n3"), 7)
    assert IsrRecord.decode(record.encode()) == record
    assert IsrRecord.decode(b'{"members": ["n1"], "isr": "n1"}') is None
    assert key_of(ISR, name).startswith("replica/isr/")


def test_the_winner_of_an_election_leads_in_the_placement() -> None:
    queue = Placement("n1", members=("n1", "n2", "n3"))
    assert lead_placement(queue, LogName("/", "q"), "n2") == Placement(
        "n2", members=("n1", "n2", "n3"))
    stream = Placement("n1", ("n1", "n2", "n3"),
                       partition_members=(("n1", "n2"), ("n2", "n3"), ("n3", "n1")))
    moved = lead_placement(stream, LogName("/", "s", 1), "n3")
    assert moved is not None and moved.partitions == ("n1", "n3", "n3") and moved.leader == "n1"
    first = lead_placement(stream, LogName("/", "s", 0), "n2")
    assert first is not None and first.leader == "n1" and first.partitions[0] == "n2"
    offsets = lead_placement(stream, LogName("/", "s"), "n3")  # the stream's group offsets
    assert offsets is not None and offsets.leader == "n3" and offsets.partitions == stream.partitions
    assert lead_placement(None, LogName("/", "q"), "n2") is None
    assert Placement.decode(stream.encode()) == stream
    assert stream.replicas(2) == ("n3", "n1") and stream.replicas(9) == ()
    assert Placement.decode(b'{"leader": "n1", "members": [1]}') is None
    assert Placement.decode(b'{"leader": "n1", "partition_members": 5}') is None
