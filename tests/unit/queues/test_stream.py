"""The stream queue on its own: no broker, no socket. Fake consumers with credit read
from first/last/next/an offset/a time, settle by returning credit, and every operation a
log cannot do is refused by capability with RabbitMQ's reply."""

from __future__ import annotations

import datetime

import pytest
from pamqp import commands

from smartbroker.errors import AMQPError
from smartbroker.message import Message
from smartbroker.queues import stream as stream_module
from smartbroker.queues.base import ACCEPTED, QueueSpec, Settle, Storage
from smartbroker.queues.capabilities import require
from smartbroker.queues.classic import ClassicQueue
from smartbroker.queues.partitioner import kafka_partition, legacy_partition
from smartbroker.queues.stream import StreamEntry, StreamQueue
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_records import decode_record
from smartbroker.queues.types import QuorumQueue, declare_queue, queue_type
from smartbroker.store.commit import WrittenOut
from smartbroker.store.log import SegmentLog


class Reader:
    """A consumer with credit (prefetch) that records what it is sent; ``settle`` acks
    like a channel does: the queue is told, the credit comes back, the queue dispatches."""

    def __init__(self, credit: int = 100, offset: object = "first", **arguments: object) -> None:
        self.tag = "r"
        self.no_ack = False
        self.exclusive = False
        self.priority = 0
        self.parked = False
        self.unacked = 0
        self.credit = credit
        self.arguments = {"x-stream-offset": offset, **arguments}
        self.got: list[StreamEntry] = []
        self.cancelled = False

    def can_take(self) -> bool:
        return self.unacked < self.credit

    def deliver(self, queue: StreamQueue, entry: StreamEntry) -> None:
        assert self.can_take(), "delivered beyond credit"
        self.unacked += 1
        self.got.append(entry)

    def cancelled_by_broker(self) -> None:
        self.cancelled = True

    def settle(self, queue: StreamQueue, count: int) -> None:
        for entry in self.got[:count]:
            queue.ack(entry)
        self.unacked -= count
        queue.dispatch()

    @property
    def offsets(self) -> list[int]:
        return [e.offset for e in self.got]

    @property
    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.got]


def msg(body: bytes | str, key: str = "k") -> Message:
    return Message.build("", key, body.encode() if isinstance(body, str) else body)


def stream(settings: StreamSettings | None = None, **kwargs: object) -> StreamQueue:
    return StreamQueue("s", "/", settings=settings, **kwargs)


def fill(q: StreamQueue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        q.publish(msg(f"m{i}"))


def attach(q: StreamQueue, reader: Reader) -> Reader:
    q.validate_consumer(reader.arguments, reader.no_ack, reader.credit)
    q.add_consumer(reader)
    return reader


# --------------------------------------------------------------------------- append, read


def test_append_then_read_from_first_in_order_with_offset_headers():
    q = stream()
    fill(q, 5)
    r = attach(q, Reader())
    assert r.offsets == [0, 1, 2, 3, 4]
    assert r.bodies == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert r.got[2].message.headers["x-stream-offset"] == 2
    assert q.total_messages == 5 and q.message_count == 0  # RabbitMQ: 0 ready for streams


def test_reading_removes_nothing_a_second_reader_replays_it_all():
    q = stream()
    fill(q, 3)
    first, second = attach(q, Reader()), Reader()
    attach(q, second)
    assert first.offsets == second.offsets == [0, 1, 2]


@pytest.mark.parametrize(("offset", "expected"), [
    ("first", [0, 1, 2, 3, 4, 5]),
    ("last", [3, 4, 5]),  # the last message there was, then what comes
    ("next", [4, 5]),  # only what is published after the reader joined
    (2, [2, 3, 4, 5]),
    (4, [4, 5]),
])
def test_start_offsets(offset, expected):
    q = stream()
    fill(q, 4)
    r = attach(q, Reader(offset=offset))
    fill(q, 2, start=4)
    assert r.offsets == expected


def test_start_at_a_timestamp(monkeypatch):
    q = stream()
    clock = [1_000.0]
    monkeypatch.setattr(stream_module.time, "time", lambda: clock[0])
    fill(q, 3)
    clock[0] = 2_000.0
    fill(q, 2, start=3)
    # an AMQP timestamp arrives decoded as a datetime: the first message at or after it
    r = attach(q, Reader(offset=datetime.datetime.fromtimestamp(1_500, datetime.UTC)))
    assert r.offsets == [3, 4]


# --------------------------------------------------------------------------- credit


def test_delivery_stops_at_credit_and_an_ack_returns_it():
    q = stream()
    fill(q, 5)
    r = attach(q, Reader(credit=2))
    assert r.offsets == [0, 1]
    r.settle(q, 1)
    assert r.offsets == [0, 1, 2]
    r.settle(q, 2)
    assert r.offsets == [0, 1, 2, 3, 4]
    assert q.stats["ack"] == 3


def test_requeue_sends_nothing_back_a_log_is_replayed_by_offset():
    q = stream()
    fill(q, 2)
    r = attach(q, Reader())
    assert q.settle(Settle.REQUEUE, list(r.got)) == []
    assert r.offsets == [0, 1]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("call", "text"), [
    (lambda q: q.get(), "basic.get not supported by stream queues queue 's' in vhost '/'"),
    (lambda q: q.purge(), "queue.purge not supported by stream queues queue 's' in vhost '/'"),
    (lambda q: require(q, "reject"),
     "basic.nack and basic.reject not supported by stream queues queue 's' in vhost '/'"),
    (lambda q: q.validate_consumer({}, True, 10),
     "automatic acknowledgement not supported by stream queues queue 's' in vhost '/'"),
])
def test_what_a_log_cannot_do_is_refused_with_540(call, text):
    with pytest.raises(AMQPError) as err:
        call(stream())
    assert (err.value.code, err.value.text) == (540, text)


def test_a_consumer_without_prefetch_is_refused_with_406():
    with pytest.raises(AMQPError) as err:
        stream().validate_consumer({}, False, 0)
    assert err.value.code == 406
    assert err.value.text == "consumer prefetch count is not set for 'queue 's' in vhost '/''"


def test_classic_queues_allow_what_streams_refuse():
    q = ClassicQueue("c", "/")
    for operation in ("get", "purge", "reject", "no_ack"):
        require(q, operation)
    q.validate_consumer({}, True, 0)


@pytest.mark.parametrize(("exclusive", "auto_delete", "durable", "text"), [
    (True, False, True, "invalid property 'exclusive-owner' for queue 's' in vhost '/'"),
    (False, True, True, "invalid property 'auto-delete' for queue 's' in vhost '/'"),
    (False, False, False, "invalid property 'non-durable' for queue 's' in vhost '/'"),
])
def test_declare_refuses_what_a_stream_cannot_be(exclusive, auto_delete, durable, text):
    spec = QueueSpec("s", "/", durable, exclusive, auto_delete, {"x-queue-type": "stream"})
    with pytest.raises(AMQPError) as err:
        declare_queue(spec, None, None)  # type: ignore[arg-type]
    assert (err.value.code, err.value.text) == (406, text)


def test_the_registry_picks_the_type_from_x_queue_type():
    assert queue_type({"x-queue-type": "stream"}) is StreamQueue
    assert queue_type({"x-queue-type": b"quorum"}) is QuorumQueue
    assert queue_type({}) is ClassicQueue
    assert queue_type({"x-queue-type": "nonsense"}) is ClassicQueue  # which refuses it
    with pytest.raises(AMQPError, match="unsupported queue type 'nonsense'"):
        declare_queue(QueueSpec("q", "/", True, False, False, {"x-queue-type": "nonsense"}),
                      None, None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- storage


def test_in_memory_publish_needs_no_fsync():
    assert stream().publish(msg("x")) is ACCEPTED


def test_on_disk_persistent_publish_names_the_partition_log_to_fsync(tmp_path):
    q = stream(StreamSettings(partitions=2), storage=Storage(None, tmp_path))
    persistent = Message.build("", "a", b"x", commands.Basic.Properties(delivery_mode=2))
    result = q.publish(persistent)
    assert result.accepted and isinstance(result.sync, SegmentLog)
    assert result.sync in q.logs
    q.close()


def test_on_disk_transient_publish_waits_for_the_os_only(tmp_path):
    """A transient message's confirm needs its record written out, not fsynced: the
    result names the same partition log, as written-only."""
    q = stream(StreamSettings(partitions=2), storage=Storage(None, tmp_path))
    result = q.publish(msg("x", key="a"))
    assert result.accepted and isinstance(result.sync, WrittenOut)
    assert result.sync.log in q.logs
    def on_disk() -> int:
        return sum(p.stat().st_size for p in tmp_path.rglob("p*/*.log"))

    assert on_disk() == 0  # still in the broker's buffer
    result.sync.write_out()
    assert on_disk() > len(b"x")  # the OS has it: a kill -9 keeps it
    q.close()


def test_on_disk_stream_survives_reopening(tmp_path):
    storage = Storage(None, tmp_path)
    q = stream(storage=storage)
    fill(q, 3)
    q.close()
    again = stream(storage=storage)
    r = attach(again, Reader())
    assert r.bodies == [b"m0", b"m1", b"m2"]
    again.delete()
    assert r.cancelled


# --------------------------------------------------------------------------- partitioning


def keyed(body: str, key: object, routing_key: str = "rk") -> Message:
    return Message.build("", routing_key, body.encode(),
                         commands.Basic.Properties(headers={"x-message-key": key}))


def partition_of(q: StreamQueue, body: str) -> int:
    """The partition whose log holds ``body`` (read straight from the logs)."""
    found = [p for p, lg in enumerate(q.logs) for rec in lg.scan_records(lg.first_offset)
             if decode_record(rec.payload, p, rec.offset).body == body.encode()]
    assert len(found) == 1, found
    return found[0]


def test_a_new_stream_puts_keys_where_kafka_clients_do():
    q = stream(StreamSettings(partitions=4))
    assert q.partitioner == "murmur2"
    keys = [f"user-{i}" for i in range(40)]
    for k in keys:
        q.publish(keyed(k, k))
    got = [partition_of(q, k) for k in keys]
    assert got == [kafka_partition(k.encode(), 4) for k in keys]
    assert set(got) == {0, 1, 2, 3}
    assert got != [legacy_partition(k, 4) for k in keys]  # the rules differ on these keys


def test_unkeyed_messages_keep_the_routing_key_rule():
    q = stream(StreamSettings(partitions=4))
    for rk in (f"device.{i}" for i in range(20)):
        q.publish(msg(rk, key=rk))
        assert partition_of(q, rk) == legacy_partition(rk, 4)


def test_a_stream_on_disk_records_its_rule_and_keeps_it(tmp_path):
    storage = Storage(None, tmp_path)
    q = stream(StreamSettings(partitions=3), storage=storage)
    assert q.partitioner == "murmur2" and (q.directory / "partitioner").exists()
    q.close()
    again = stream(StreamSettings(partitions=3), storage=storage)
    assert again.partitioner == "murmur2"
    again.publish(keyed("a", "order-9"))
    assert partition_of(again, "a") == kafka_partition(b"order-9", 3)
    again.delete()
    assert stream(StreamSettings(partitions=3), storage=storage).partitioner == "murmur2"


def test_a_stream_written_before_keeps_the_legacy_rule(tmp_path):
    storage = Storage(None, tmp_path)
    q = stream(StreamSettings(partitions=4), storage=storage)
    q.publish(keyed("old", "k0"))
    q.close()
    (q.directory / "partitioner").unlink()  # what an older version's data directory looks like
    for _ in range(2):  # recorded as legacy on the first reopening, kept on the next
        old = stream(StreamSettings(partitions=4), storage=storage)
        assert old.partitioner == "legacy"
        old.close()
    old = stream(StreamSettings(partitions=4), storage=storage)
    keys = [f"user-{i}" for i in range(40)]
    for k in keys:
        old.publish(keyed(k, k))
    assert [partition_of(old, k) for k in keys] == [legacy_partition(k, 4) for k in keys]
    old.close()


def test_a_one_partition_stream_never_decodes_headers():
    q = stream()
    m = keyed("x", "k")
    m._properties = None  # as received off the wire
    q.publish(m)
    assert m._properties is None


# --------------------------------------------------------------------------- retention


def big(i: int) -> Message:
    return msg(bytes([i % 256]) * 1000)


def test_max_length_bytes_deletes_whole_head_segments():
    q = stream(StreamSettings(segment_bytes=4096, max_length_bytes=8192))
    for i in range(40):
        q.publish(big(i))
    before = q.logs[0].first_offset
    removed = q.enforce_retention()
    assert removed > 0 and q.logs[0].first_offset > before
    assert q.message_bytes <= 8192 + 4096  # the active segment is never deleted
    r = attach(q, Reader())
    assert r.offsets[0] == q.logs[0].first_offset  # "first" is the new head


def test_max_age_deletes_closed_segments_older_than_the_age(monkeypatch):
    q = stream(StreamSettings(segment_bytes=4096, max_age=60))
    clock = [1_000.0]
    monkeypatch.setattr(stream_module.time, "time", lambda: clock[0])
    for i in range(10):
        q.publish(big(i))
    clock[0] = 2_000.0
    for i in range(10):
        q.publish(big(i))
    assert q.enforce_retention(now_ms=2_000_000) > 0
    assert q.enforce_retention(now_ms=2_000_000) == 0  # what is left is young or active
    assert q.logs[0].first_offset > 0


def test_a_policy_applies_max_age_and_the_smaller_length_wins():
    q = stream(StreamSettings(max_length_bytes=10_000))
    q.apply_policy("p", {"max-age": "1h", "max-length-bytes": 50_000,
                         "stream-max-segment-size-bytes": 8192})
    assert (q.policy_name, q.stream.max_age, q.stream.max_length_bytes) == ("p", 3600, 10_000)
    assert q.logs[0].segment_bytes == 8192
    q.apply_policy(None, None)
    assert (q.stream.max_age, q.stream.max_length_bytes) == (None, 10_000)


def test_policies_accept_the_stream_keys_and_refuse_bad_values():
    from smartbroker.broker.policies import Policy, PolicyError

    Policy("p", ".*", {"max-age": "7D", "stream-max-segment-size-bytes": 1_000_000})
    with pytest.raises(PolicyError, match="'max-age' must be an age"):
        Policy("p", ".*", {"max-age": "soon"})
    with pytest.raises(PolicyError, match="'stream-max-segment-size-bytes' must be an integer"):
        Policy("p", ".*", {"stream-max-segment-size-bytes": 0})
