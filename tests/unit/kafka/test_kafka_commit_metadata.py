"""A Kafka commit's metadata string and leader epoch are kept with the offset (durably, in the stream's offset
book) and OffsetFetch answers it, as Kafka does; librdkafka's own suite checks it (0099).
AMQP acks and resets commit without metadata, which clears it, as a Kafka commit without
metadata does. Over offset.metadata.max.bytes (4096) is OFFSET_METADATA_TOO_LARGE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.groups import OFFSET_COMMIT, OFFSET_FETCH
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.queues.offsets import OffsetBook
from smartbroker.store import MemoryLog, SegmentLog
from tests.unit.kafka.kafka_fixtures import SESSION, THREE_PARTITIONS, broker_with


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS})


def call(broker: Broker, api_key: int, version: int, **fields: Any) -> Any:
    h = KafkaHandlers(broker, Node(None, 19092, Node.cluster_id_for("x"), "/"))
    body = codec.REQUESTS[api_key](version=version, **fields)
    resp = h.handle(Request(Header(api_key, version, 7, "t"), body), SESSION)
    wire = codec.encode_response(api_key, version, 7, resp)
    return codec.response_class(api_key).decode(wire[4:], version=version, header=True)


def commit(broker: Broker, partition: int, offset: int, metadata: str | None,
           epoch: int = -1, version: int = 8) -> int:
    topic_cls = codec.REQUESTS[OFFSET_COMMIT].OffsetCommitRequestTopic
    part = topic_cls.OffsetCommitRequestPartition(
        partition_index=partition, committed_offset=offset, committed_leader_epoch=epoch,
        committed_metadata=metadata)
    resp = call(broker, OFFSET_COMMIT, version, group_id="g", generation_id_or_member_epoch=-1,
                member_id="", group_instance_id=None, retention_time_ms=-1,
                topics=[topic_cls(name="orders", partitions=[part])])
    return resp.topics[0].partitions[0].error_code


def fetch(broker: Broker, version: int, every: bool = False) -> dict[int, tuple[int, str]]:
    cls = codec.REQUESTS[OFFSET_FETCH]
    wanted = None if every else [cls.OffsetFetchRequestTopic(name="orders",
                                                             partition_indexes=[0, 1, 2])]
    resp = call(broker, OFFSET_FETCH, version, group_id="g", topics=wanted, require_stable=False)
    return {p.partition_index: (p.committed_offset, p.metadata)
            for t in resp.topics for p in t.partitions}


@pytest.mark.parametrize("version", [1, 5, 7])
def test_offset_fetch_answers_the_committed_metadata(broker: Broker, version: int) -> None:
    assert commit(broker, 0, 42, "       Hello") == 0
    assert commit(broker, 1, 7, None) == 0
    assert fetch(broker, version) == {0: (42, "       Hello"), 1: (7, ""), 2: (-1, "")}
    assert fetch(broker, 7, every=True) == {0: (42, "       Hello"), 1: (7, "")}
    assert commit(broker, 0, 42, "") == 0  # the same offset, metadata cleared
    assert fetch(broker, version)[0] == (42, "")


def test_metadata_over_the_limit_is_refused(broker: Broker) -> None:
    assert commit(broker, 0, 1, "x" * 4097) == ErrorCode.OFFSET_METADATA_TOO_LARGE
    assert commit(broker, 0, 1, "x" * 4096) == 0
    assert fetch(broker, 7)[0] == (1, "x" * 4096)


def test_book_keeps_metadata_across_reopen(tmp_path: Path) -> None:
    book = OffsetBook(SegmentLog(tmp_path / "offsets", fsync="never"))
    book.commit("g", 0, 5, "meta")
    book.commit("g", 1, 6, "other")
    book.commit("g", 1, 7)  # an AMQP ack: metadata gone
    book.commit("h", 0, 1)
    book.log.close()
    again = OffsetBook(SegmentLog(tmp_path / "offsets", fsync="never"))
    assert again.partitions("g") == {0: 5, 1: 7} and again.get("h", 0) == 1
    assert [again.extra_of("g", p) for p in (0, 1)] == [(-1, "meta"), (-1, "")]
    assert again.forget("g", [0]) and again.extra_of("g", 0) == (-1, "")
    again.log.close()


def test_acks_without_metadata_write_only_changes() -> None:
    lg = MemoryLog()
    book = OffsetBook(lg)
    book.commit("g", 0, 1)
    book.commit("g", 0, 1)
    book.commit("g", 0, 1, "m")
    book.commit("g", 0, 1, "m")
    assert lg.next_offset == 2


def test_the_leader_epoch_comes_back(broker: Broker, tmp_path: Path) -> None:
    """librdkafka's AlterConsumerGroupOffsets/ListConsumerGroupOffsets compare it (0081)."""
    assert commit(broker, 0, 10, None, epoch=2) == 0
    assert commit(broker, 1, 20, "m", epoch=3) == 0
    assert commit(broker, 2, 30, None, version=5) == 0  # no epoch before v6
    resp = call(broker, OFFSET_FETCH, 7, group_id="g", require_stable=False, topics=[
        codec.REQUESTS[OFFSET_FETCH].OffsetFetchRequestTopic(name="orders",
                                                             partition_indexes=[0, 1, 2])])
    assert [(p.committed_offset, p.committed_leader_epoch, p.metadata)
            for p in resp.topics[0].partitions] == [(10, 2, ""), (20, 3, "m"), (30, -1, "")]
    book = OffsetBook(SegmentLog(tmp_path / "o", fsync="never"))
    book.commit("g", 0, 1, "", 7)
    book.log.close()
    again = OffsetBook(SegmentLog(tmp_path / "o", fsync="never"))
    assert (again.get("g", 0), again.extra_of("g", 0)) == (1, (7, ""))
    again.log.close()
