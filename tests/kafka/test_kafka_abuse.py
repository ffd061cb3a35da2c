"""Hostile clients on the Kafka port of a real broker: bad size prefixes, a request that
never completes, unsupported keys and versions, pipelining without reading, long-polls
abandoned, absurd admin requests, a join storm. Each must get Kafka's answer or a clean
close, leave no ERROR or traceback in the broker log, and another client must keep
producing and fetching in the same test (raw_client.py). (Produce-side abuse:
test_kafka_abuse_produce.py.)
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.protocol import admin, consumer, metadata

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.raw_client import (
    Raw,
    batch,
    create_topics,
    fetch,
    fetch_request,
    healthy,
    mark,
    produce,
    quiet,
)

MAX_REQUEST = 100 * 1024 * 1024  # socket.request.max.bytes


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-abuse-") as proc:
        yield proc



# -- size prefixes and unfinished requests ---------------------------------------------------


@pytest.mark.parametrize("prefix", [2**31 - 1, -(2**31), -1, MAX_REQUEST + 1],
                         ids=["2GiB-1", "int32-min(2GiB unsigned)", "negative", "just-over"])
def test_size_prefix_out_of_bounds_closes(broker: BrokerProcess, prefix: int) -> None:
    since = mark(broker)
    with Raw(broker.kafka_port) as raw:
        raw.sock.sendall(struct.pack(">i", prefix) + b"\x00" * 64)
        assert raw.closed_by_peer()
    healthy(broker)
    quiet(broker, since)


def test_exactly_the_bound_is_accepted_as_a_frame(broker: BrokerProcess) -> None:
    """A prefix of exactly 100 MiB is a frame Kafka would read; the broker waits for it
    (we send a part and leave), and others are served meanwhile."""
    since = mark(broker)
    with Raw(broker.kafka_port) as raw:
        raw.sock.sendall(struct.pack(">i", MAX_REQUEST) + b"\x00" * 1024)
        assert not raw.closed_by_peer(timeout=0.5)
        healthy(broker)
    healthy(broker)
    quiet(broker, since)


def test_slowloris_partial_frames_do_not_stall_others(broker: BrokerProcess) -> None:
    since = mark(broker)
    slow = [Raw(broker.kafka_port) for _ in range(50)]
    try:
        for i, raw in enumerate(slow):  # a header's worth of a Metadata that never ends
            raw.sock.sendall(struct.pack(">ihhi", 200, 3, 8, i)[: 4 + i % 8])
        start = time.monotonic()
        healthy(broker)
        assert time.monotonic() - start < 5
        for raw in slow[:10]:  # a trickle, a byte at a time
            raw.sock.sendall(b"\x00")
        healthy(broker)
    finally:
        for raw in slow:
            raw.close()
    quiet(broker, since)


# -- unsupported keys and versions -------------------------------------------------------------


def test_api_versions_too_new_is_answered_others_close(broker: BrokerProcess) -> None:
    """KIP-511: an ApiVersions newer than the broker's is answered UNSUPPORTED_VERSION (35)
    in a v0 response; an unknown api key, or a known one at a version not advertised,
    closes the connection, as Kafka's request parsing does."""
    since = mark(broker)
    with Raw(broker.kafka_port) as raw:
        raw.sock.sendall(struct.pack(">ihhih", 12, 18, 999, 41, 2) + b"cc")
        (size,) = struct.unpack(">i", raw.recv(4))
        corr, code = struct.unpack_from(">ih", raw.recv(size))
        assert (corr, code) == (41, 35)
    for key, version in [(9999, 0), (-1, 0), (3, 999), (0, 0), (3, -1)]:
        with Raw(broker.kafka_port) as raw:
            raw.sock.sendall(struct.pack(">ihhih", 10, key, version, 1, -1))
            assert raw.closed_by_peer(), (key, version)
    healthy(broker)
    quiet(broker, since)


# -- pipelining without reading --------------------------------------------------------------


def test_pipelined_fetches_unread_keep_broker_memory_bounded(broker: BrokerProcess) -> None:
    """Thousands of Fetch requests of ~1 MiB answers each, never read: the broker must stop
    reading the socket (Kafka mutes a channel with a response outstanding) rather than
    hold every answer in memory. Read afterwards, every answer arrives, in order."""
    since = mark(broker)
    topic = f"big-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        for _ in range(8):
            assert produce(raw, topic, batch([b"x" * 1000] * 120)).error_code == 0
    rss0 = broker.rss() or 0
    n = 400
    with Raw(broker.kafka_port, timeout=60) as greedy:
        greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        wire = b"".join(fetch_request(greedy, topic, 0) for _ in range(n))
        greedy.sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(wire) and time.monotonic() < deadline:
            try:
                sent += greedy.sock.send(wire[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        growth, deadline = 0, time.monotonic() + 2  # watch what it does with what it read
        while time.monotonic() < deadline and growth < 150 * 1024 * 1024:
            growth = max(growth, (broker.rss() or 0) - rss0)
            time.sleep(0.05)
        print(f"broker RSS growth with {n} unread ~1 MiB Fetch answers: {growth >> 20} MiB")
        healthy(broker)
        assert growth < 150 * 1024 * 1024, f"broker grew {growth >> 20} MiB holding answers"
        greedy.sock.setblocking(True)
        greedy.sock.settimeout(60)
        if sent < len(wire):
            greedy.sock.sendall(wire[sent:])  # reading lets the broker go on
        first = greedy.response()
        assert first.responses[0].partitions[0].error_code == 0
        for _ in range(n - 1):
            greedy.response()
    healthy(broker)
    quiet(broker, since)


def test_fetch_asking_for_two_gibibytes_gets_at_most_fetch_max_bytes(broker: BrokerProcess) -> None:
    """max_bytes and partition_max_bytes of 2^31-1 over ~80 MiB of log: the answer stops at
    Kafka's broker fetch.max.bytes (55 MiB), not at what the client asked for."""
    since = mark(broker)
    topic = f"huge-fetch-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port, timeout=60) as raw:
        chunk = batch([b"y" * 1000] * 1000)  # ~1 MiB
        for _ in range(80):
            assert produce(raw, topic, chunk).error_code == 0
        F = consumer.FetchRequest
        raw.sock.sendall(raw.encode(
            F, 11, replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=2**31 - 1,
            isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=[],
            rack_id="", topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(
                partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                partition_max_bytes=2**31 - 1)] * 3)]))
        parts = raw.response().responses[0].partitions
        total = sum(len(bytes(p.records or b"")) for p in parts)
        assert 0 < total <= 55 * 1024 * 1024 + len(chunk), total
    healthy(broker)
    quiet(broker, since)


# -- long-polls abandoned ---------------------------------------------------------------------


def test_abandoned_long_polls_leave_nothing_behind(broker: BrokerProcess) -> None:
    """Fetches waiting max_wait_ms = 2^31-1 on a topic nobody writes, then the clients
    vanish: the broker stays responsive, and a later append wakes nobody stale (a
    leaked hook would raise or log when it fires)."""
    since = mark(broker)
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    with Raw(broker.kafka_port) as raw:
        end = produce(raw, topic, batch([b"seed"])).base_offset + 1
    for _ in range(3):
        waiting = [Raw(broker.kafka_port) for _ in range(40)]
        for raw in waiting:
            raw.sock.sendall(fetch_request(raw, topic, end, max_wait_ms=2**31 - 1))
        healthy(broker)
        for raw in waiting:
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # a reset, not even a FIN
    with Raw(broker.kafka_port) as raw:
        part = produce(raw, topic, batch([b"after"]))  # fires any hook left behind
        assert part.error_code == 0
        got = fetch(raw, topic, end, max_wait_ms=100)
        assert b"after" in bytes(got.records)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the management API agrees they are gone
        kafka = [c for c in broker.get_json("/api/connections") if c.get("protocol") == "Kafka"]
        if not kafka:
            break
        time.sleep(0.1)
    assert not kafka, kafka
    quiet(broker, since)


# -- absurd admin requests --------------------------------------------------------------------



def test_create_topics_absurd_partitions_refused_without_allocating(broker: BrokerProcess) -> None:
    since = mark(broker)
    rss0 = broker.rss() or 0
    base = uuid.uuid4().hex[:8]
    with Raw(broker.kafka_port) as raw:
        start = time.monotonic()
        resp = create_topics(raw, [(f"{base}-huge", 1_000_000, 1), (f"{base}-max", 2**31 - 1, 1),
                                   (f"{base}-neg", -7, 1), (f"{base}-rf", 1, 30000),
                                   (f"{base}-zero", 0, 1)])
        assert time.monotonic() - start < 5
        codes = {t.name.split("-")[-1]: t.error_code for t in resp.topics}
        # INVALID_PARTITIONS (37) and INVALID_REPLICATION_FACTOR (38), as Kafka
        assert codes == {"huge": 37, "max": 37, "neg": 37, "rf": 38, "zero": 37}, codes
        P = admin.CreatePartitionsRequest
        assert create_topics(raw, [(f"{base}-ok", 1, 1)]).topics[0].error_code == 0
        grow = raw.call(P, 1, topics=[P.CreatePartitionsTopic(
            name=f"{base}-ok", count=1_000_000, assignments=None)], timeout_ms=10000,
            validate_only=False)
        assert grow.results[0].error_code == 37, grow
    assert (broker.rss() or 0) - rss0 < 100 * 1024 * 1024
    healthy(broker)
    quiet(broker, since)


def test_create_topics_by_the_hundred_does_not_stall_others(broker: BrokerProcess) -> None:
    """300 topics in one CreateTopics are created a slice of loop time at a time
    (kafka/slices.py): another client's Metadata is answered meanwhile, and all 300 exist
    when the answer comes."""
    import threading

    since = mark(broker)
    base = uuid.uuid4().hex[:8]
    done = threading.Event()
    answers: list[Any] = []

    def create() -> None:
        try:
            with Raw(broker.kafka_port, timeout=120) as raw:
                answers.append(create_topics(raw, [(f"{base}-bulk-{i}", 1, 1)
                                                   for i in range(300)]))
        finally:
            done.set()

    thread = threading.Thread(target=create)
    worst = 0.0
    with Raw(broker.kafka_port) as raw:
        thread.start()
        while not done.is_set():
            start = time.monotonic()
            raw.call(metadata.MetadataRequest, 8, topics=[], allow_auto_topic_creation=False,
                     include_cluster_authorized_operations=False,
                     include_topic_authorized_operations=False)
            worst = max(worst, time.monotonic() - start)
    thread.join()
    quiet(broker, since)
    # one handler call for all 300 took >= 0.26 s on a quiet machine (up to 1.5 s loaded);
    # a slice is ~10 ms: 0.02-0.03 s measured here
    assert worst < 0.2, f"another client waited {worst:.2f}s for a Metadata answer"
    assert [t.error_code for t in answers[0].topics] == [0] * 300


def test_topic_names_at_and_over_kafkas_limit(broker: BrokerProcess) -> None:
    """249 characters is the longest legal topic name: it works end to end (and survives
    being a stream's directory name); 250 is INVALID_TOPIC_EXCEPTION (17) everywhere."""
    since = mark(broker)
    longest = ("t" + uuid.uuid4().hex) .ljust(249, "x")
    over = longest + "y"
    with Raw(broker.kafka_port) as raw:
        assert create_topics(raw, [(over, 1, 1)]).topics[0].error_code == 17
        assert produce(raw, over, batch([b"v"])).error_code == 17
        assert create_topics(raw, [(longest, 1, 1)]).topics[0].error_code == 0
        part = produce(raw, longest, batch([b"long"]))
        assert part.error_code == 0, part
        assert b"long" in bytes(fetch(raw, longest, part.base_offset).records)
    healthy(broker)
    quiet(broker, since)


def test_metadata_for_ten_thousand_names(broker: BrokerProcess) -> None:
    """Metadata naming 10k topics that do not exist, without auto-creation: each is
    UNKNOWN_TOPIC_OR_PARTITION (3), in one timely answer; none is created."""
    since = mark(broker)
    M = metadata.MetadataRequest
    names = [f"nx-{uuid.uuid4().hex[:6]}-{i}" for i in range(10_000)]
    with Raw(broker.kafka_port, timeout=60) as raw:
        start = time.monotonic()
        resp = raw.call(M, 8, topics=[M.MetadataRequestTopic(name=n) for n in names],
                        allow_auto_topic_creation=False,
                        include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False)
        took = time.monotonic() - start
        assert {t.error_code for t in resp.topics} == {3} and len(resp.topics) == 10_000
        assert took < 10, took
        every = raw.call(M, 8, topics=None, allow_auto_topic_creation=False,
                         include_cluster_authorized_operations=False,
                         include_topic_authorized_operations=False)
        assert not {t.name for t in every.topics} & set(names)
    healthy(broker)
    quiet(broker, since)


# -- a join storm ---------------------------------------------------------------------------------


def test_join_group_storm(broker: BrokerProcess) -> None:
    """300 connections join one group (v5: MEMBER_ID_REQUIRED, then again with the id) and
    vanish without leaving; the coordinator answers each, the broker stays responsive, and
    a member of another group is its leader meanwhile."""
    since = mark(broker)
    group = f"storm-{uuid.uuid4().hex[:8]}"
    J = consumer.JoinGroupRequest
    proto = [J.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x01\x00\x00\x00\x00")]

    def join(raw: Raw, member: str, name: str = group) -> Any:
        return raw.call(J, 5, group_id=name, session_timeout_ms=6000,
                        rebalance_timeout_ms=6000, member_id=member, group_instance_id=None,
                        protocol_type="consumer", protocols=proto)

    stormers = [Raw(broker.kafka_port) for _ in range(300)]
    try:
        ids = []
        for raw in stormers:
            first = join(raw, "")
            assert first.error_code == 79, first  # MEMBER_ID_REQUIRED
            ids.append(first.member_id)
        for raw, member in zip(stormers, ids, strict=True):  # the second join waits for the rebalance
            raw.sock.sendall(raw.encode(J, 5, group_id=group, session_timeout_ms=6000,
                                        rebalance_timeout_ms=6000, member_id=member,
                                        group_instance_id=None, protocol_type="consumer",
                                        protocols=proto))
        healthy(broker)
        with Raw(broker.kafka_port, timeout=30) as calm:
            other = f"calm-{uuid.uuid4().hex[:8]}"
            member = join(calm, "", other).member_id
            joined = join(calm, member, other)
            assert joined.error_code == 0 and joined.leader == member, joined
    finally:
        for raw in stormers:
            raw.close()
    healthy(broker)
    quiet(broker, since)
