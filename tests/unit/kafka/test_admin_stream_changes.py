"""What Kafka's admin APIs change on a stream queue, at the queue (queues/stream_admin.py,
StreamMeta): the topic id, a grown partition count, config overrides and a moved log start,
each durable across reopening the stream from its directory, and what AMQP readers see."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from smartbroker.queues.base import Storage
from smartbroker.queues.partitioner import kafka_partition
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_admin import add_partitions, delete_records, set_overrides
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_storage import META_FILE
from tests.unit.queues.test_stream import Reader, attach, fill, keyed, partition_of


def on_disk(tmp_path: Path, partitions: int = 1, **arguments: object) -> StreamQueue:
    """The stream "s" from its directory under ``tmp_path``, as a restart opens it."""
    args = {"x-queue-type": "stream", "x-partitions": partitions, **arguments}
    settings = StreamSettings.parse("s", "/", True, False, False, args)
    return StreamQueue("s", "/", arguments=args, settings=settings,
                       storage=Storage(None, tmp_path, fsync="always"))


def test_a_stream_keeps_its_topic_id_and_a_new_stream_of_that_name_gets_another(
        tmp_path: Path) -> None:
    q = on_disk(tmp_path)
    first = q.meta.topic_id
    assert first != uuid.UUID(int=0)
    q.close()
    again = on_disk(tmp_path)
    assert again.meta.topic_id == first  # survives a restart
    again.delete()
    recreated = on_disk(tmp_path)
    assert recreated.meta.topic_id != first  # deleted and created again: a new id
    recreated.close()


def test_memory_streams_get_random_ids() -> None:
    assert StreamQueue("s", "/").meta.topic_id != StreamQueue("s", "/").meta.topic_id


def test_an_unreadable_meta_file_gives_a_new_id_not_a_crash(tmp_path: Path) -> None:
    q = on_disk(tmp_path)
    q.close()
    (q.directory / META_FILE).write_text("{not json")
    again = on_disk(tmp_path)
    assert json.loads((again.directory / META_FILE).read_text())["topic_id"] == str(
        again.meta.topic_id)
    again.close()


def test_grown_partitions_take_keyed_records_and_survive_reopening(tmp_path: Path) -> None:
    q = on_disk(tmp_path, partitions=2)
    add_partitions(q, 5)
    assert len(q.logs) == 5 and q.stream.partitions == 5
    keys = [f"user-{i}" for i in range(30)]
    for k in keys:
        q.publish(keyed(k, k))
    assert [partition_of(q, k) for k in keys] == [kafka_partition(k.encode(), 5) for k in keys]
    q.close()
    again = on_disk(tmp_path, partitions=2)  # declared with 2, as the definitions say
    assert len(again.logs) == 5
    assert again.arguments["x-partitions"] == 2  # what AMQP redeclares are checked against
    assert [partition_of(again, k) for k in keys] == [kafka_partition(k.encode(), 5) for k in keys]
    with pytest.raises(ValueError):
        add_partitions(again, 5)
    again.close()


def test_a_reader_of_every_partition_reads_the_new_ones_a_pinned_one_does_not() -> None:
    q = StreamQueue("s", "/", settings=StreamSettings(partitions=1))
    everything = attach(q, Reader(offset="next"))
    pinned = attach(q, Reader(offset="first", **{"x-stream-partition": 0}))
    add_partitions(q, 3)
    for k in ("a", "b", "c", "d", "e", "f"):
        q.publish(keyed(k, k))
    assert {e.partition for e in everything.got} == {p for p in range(3)
                                                     if q.logs[p].next_offset}
    assert len(everything.got) == 6
    assert {e.partition for e in pinned.got} <= {0}


def test_a_group_rebalances_over_grown_partitions() -> None:
    q = StreamQueue("s", "/", settings=StreamSettings(partitions=1))
    a = attach(q, Reader(**{"x-consumer-group": "g"}))
    b = attach(q, Reader(**{"x-consumer-group": "g"}))
    add_partitions(q, 4)
    owned = [set(r.member.partitions) for r in (q.readers[a], q.readers[b])]
    assert owned[0] | owned[1] == {0, 1, 2, 3} and not owned[0] & owned[1]
    assert all(len(o) == 2 for o in owned)


def test_delete_records_moves_the_start_for_every_reader_and_survives_reopening(
        tmp_path: Path) -> None:
    q = on_disk(tmp_path, **{"x-stream-max-segment-size-bytes": 4096})
    fill(q, 100)
    reading = attach(q, Reader(credit=5))  # read 0..4 before the deletion
    assert reading.offsets == [0, 1, 2, 3, 4]
    assert delete_records(q, 0, 40) == 40
    assert q.partitions[0].bounds() == (40, 100)
    assert delete_records(q, 0, 10) == 40  # below the start: nothing changes
    assert q.logs[0].read_record(39) is None and q.logs[0].read_record(40) is not None
    reading.settle(q, 5)
    assert reading.offsets[5] == 40  # its cursor skipped what is gone
    assert attach(q, Reader(offset="first")).offsets[0] == 40
    assert attach(q, Reader(offset=7)).offsets[0] == 40
    segments_before = q.logs[0].segment_count
    q.close()
    again = on_disk(tmp_path, **{"x-stream-max-segment-size-bytes": 4096})
    assert again.partitions[0].bounds() == (40, 100)
    assert again.logs[0].segment_count == segments_before
    assert attach(again, Reader(offset="first")).offsets[0] == 40
    assert delete_records(again, 0, 100) == 100  # the high watermark: nothing left to read
    assert attach(again, Reader(offset="first")).got == []
    again.close()


def test_overrides_change_what_retention_does_and_survive_reopening(tmp_path: Path) -> None:
    q = on_disk(tmp_path, **{"x-max-age": "7D"})
    assert q.stream.max_age == 7 * 86400
    set_overrides(q, {"x-max-age": None, "x-max-length-bytes": 5000,
                      "x-stream-max-segment-size-bytes": 4096}, None)
    assert (q.stream.max_age, q.stream.max_length_bytes, q.stream.segment_bytes) == (
        None, 5000, 4096)
    assert q.arguments == {"x-queue-type": "stream", "x-partitions": 1, "x-max-age": "7D"}
    assert all(lg.segment_bytes == 4096 for lg in q.logs)
    fill(q, 200)
    assert q.enforce_retention() > 0  # the timer's pass deletes by the new size limit
    q.close()
    again = on_disk(tmp_path, **{"x-max-age": "7D"})
    assert (again.stream.max_age, again.stream.max_length_bytes) == (None, 5000)
    again.close()


def test_a_policy_still_applies_over_the_overrides() -> None:
    q = StreamQueue("s", "/", settings=StreamSettings())
    set_overrides(q, {"x-max-length-bytes": 5000}, {"max-length-bytes": 3000})
    assert q.stream.max_length_bytes == 3000
    assert q.declared.max_length_bytes == 5000
