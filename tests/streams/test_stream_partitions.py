"""Partitioning by key (``x-message-key``: Kafka's murmur2, as Kafka clients; else the routing
key's mmh3, seed 104729), per-partition order and offsets (smartbroker)."""

from __future__ import annotations

import pytest
from stream_helpers import (
    keys_by_partition,
    partition_of,
    publish,
    pump_until,
    quiet,
    read_all,
    routing_partition_of,
)

from tests.integration.helpers import channel_error, connect

pytestmark = pytest.mark.extension


def test_routing_key_picks_the_partition(ch, stream, broker_url, uid):
    q = stream(partitions=5)
    x = f"test.streams.topic.{uid}"
    ch.exchange_declare(x, "topic", auto_delete=True)
    try:
        ch.queue_bind(q, x, "#")
        keys = [f"device.{i}" for i in range(40)]
        publish(ch, q, keys, exchange=x, key=lambda i: keys[i])
        got = read_all(broker_url, q, 40)
    finally:
        ch.exchange_delete(x)
    assert sorted(g.text for g in got) == sorted(keys)
    for g in got:
        assert g.routing_key == g.text
        assert g.partition == routing_partition_of(g.text, 5), g
    assert len({g.partition for g in got}) == 5  # 40 keys spread over all 5


def test_message_key_header_beats_the_routing_key(ch, stream, broker_url):
    q = stream(partitions=4)
    keys = [f"user-{i}" for i in range(30)]
    # default exchange: every routing key is the queue name, so only the header can spread them
    publish(ch, q, keys, headers=lambda i: {"x-message-key": keys[i]})
    got = read_all(broker_url, q, 30)
    assert {g.partition for g in got} == {0, 1, 2, 3}
    for g in got:
        assert g.partition == partition_of(g.text, 4)
        assert g.headers["x-message-key"] == g.text


def test_order_and_offsets_hold_per_partition(ch, stream, broker_url):
    q = stream(partitions=3)
    keys = [k for ks in keys_by_partition(3, per=4).values() for k in ks]  # 12 keys, 4 each
    n = 240
    sent = [(keys[i % len(keys)], f"{keys[i % len(keys)]}#{i}") for i in range(n)]
    publish(ch, q, [b for _, b in sent], headers=lambda i: {"x-message-key": sent[i][0]})
    got = read_all(broker_url, q, n)
    for p in range(3):
        mine = [g for g in got if g.partition == p]
        expected = [b for k, b in sent if partition_of(k, 3) == p]
        assert [g.text for g in mine] == expected  # publish order within the partition
        assert [g.offset for g in mine] == list(range(len(expected)))  # 0, 1, 2, ... each
    assert all(isinstance(g.offset, int) and isinstance(g.partition, int) for g in got)


def test_x_stream_partition_reads_one_partition_only(ch, stream, broker_url, readers):
    q = stream(partitions=4)
    by_p = keys_by_partition(4, per=3)
    items = [(k, f"{k}@{p}") for p, ks in by_p.items() for k in ks for _ in range(2)]
    publish(ch, q, [b for _, b in items], headers=lambda i: {"x-message-key": items[i][0]})
    r = readers(broker_url, q, args={"x-stream-offset": "first", "x-stream-partition": 2})
    pump_until([r], lambda: len(r.got) >= 6)
    quiet([r])
    assert [g.text for g in r.got] == [b for k, b in items if partition_of(k, 4) == 2]
    assert r.offsets == list(range(6)) and r.partitions == {2}
    # live: new messages of other partitions never reach it
    more = [(by_p[p][0], f"live-{p}") for p in range(4)]
    publish(ch, q, [b for _, b in more], headers=lambda i: {"x-message-key": more[i][0]})
    pump_until([r], lambda: len(r.got) >= 7)
    quiet([r])
    assert [g.text for g in r.got[6:]] == ["live-2"] and r.got[6].offset == 6


def test_integer_offset_applies_to_each_partition(ch, stream, broker_url):
    q = stream(partitions=3)
    by_p = keys_by_partition(3)
    items = [(by_p[p][0], f"p{p}-{i}") for i in range(5) for p in range(3)]
    publish(ch, q, [b for _, b in items], headers=lambda i: {"x-message-key": items[i][0]})
    got = read_all(broker_url, q, 9, args={"x-stream-offset": 2})
    assert sorted((g.partition, g.offset) for g in got) == [(p, o) for p in range(3) for o in (2, 3, 4)]
    assert sorted(g.text for g in got) == sorted(f"p{p}-{i}" for p in range(3) for i in (2, 3, 4))


@pytest.mark.parametrize("value", [4, -1, "1"])
def test_x_stream_partition_out_of_range_is_refused(stream, broker_url, value):
    q = stream(partitions=4)
    with connect(broker_url) as c, channel_error(406) as err:
        chan = c.channel()
        chan.basic_qos(prefetch_count=10)
        chan.basic_consume(q, lambda *a: None, arguments={"x-stream-partition": value})
    assert "x-stream-partition" in err[0].reply_text
