"""Issue 12: a stream of tiny segments must not use up the broker's descriptors.

The broker runs with a limit of 256 descriptors, soft and hard (as a small container would
give it: a soft limit alone the broker raises to the hard one at start);
a stream of one message per segment gets far more segments than that. Open segment files
are bounded (store/handles.py: a quarter of the limit), so the broker keeps accepting
connections, before and after a restart, and old segments are reopened when read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from stream_helpers import declare_stream, publish, read_all

from tests.conftest import EXTERNAL_URL, BrokerProcess, assert_clean_log
from tests.integration.helpers import channel_error, connect

pytestmark = pytest.mark.extension

FD_LIMIT = 256
SEGMENTS = 600  # well over FD_LIMIT: one descriptor per segment would exhaust it
BODY = b"s" * 3000  # one message per (minimum, 4 KiB) segment


@pytest.fixture
def small_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    if EXTERNAL_URL:
        pytest.skip("needs a smartbroker subprocess of its own")
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    proc = BrokerProcess(data_dir=tmp_path / "data",
                         wrapper=["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}"])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


def open_fds(proc: BrokerProcess) -> int:
    assert proc.proc is not None
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def accepts_connections(url: str, n: int = 20) -> None:
    """``n`` clients at once, each with a working channel."""
    conns = [connect(url) for _ in range(n)]
    try:
        for c in conns:
            c.channel().queue_declare("", exclusive=True)
    finally:
        for c in conns:
            c.close()


def segment_files(proc: BrokerProcess) -> int:
    return sum(1 for _ in proc.data_dir.rglob("*.log"))


def test_tiny_segments_keep_descriptors_bounded(small_broker: BrokerProcess) -> None:
    url = small_broker.url
    with connect(url) as c:
        ch = c.channel()
        declare_stream(ch, "tiny", stream_max_segment_size_bytes=1)  # raised to 4 KiB
        publish(ch, "tiny", [BODY + b"%d" % i for i in range(SEGMENTS)])
    assert segment_files(small_broker) >= SEGMENTS
    assert open_fds(small_broker) < FD_LIMIT // 2
    accepts_connections(url)
    got = read_all(url, "tiny", SEGMENTS)  # replay from first: every old segment reopened
    assert [g.body for g in got] == [BODY + b"%d" % i for i in range(SEGMENTS)]

    small_broker.stop()
    small_broker.start()  # recovery opens every segment, keeps only some open
    assert open_fds(small_broker) < FD_LIMIT // 2
    accepts_connections(url)
    got = read_all(url, "tiny", SEGMENTS)
    assert [g.body for g in got] == [BODY + b"%d" % i for i in range(SEGMENTS)]
    with connect(url) as c:
        publish(c.channel(), "tiny", [b"after restart"])
    assert read_all(url, "tiny", SEGMENTS + 1)[-1].body == b"after restart"
    assert open_fds(small_broker) < FD_LIMIT // 2


def test_segment_size_above_rabbitmq_maximum_is_refused(broker_url: str) -> None:
    """RabbitMQ's limit and text (rabbit_stream_queue: 3,000,000,000 bytes)."""
    with connect(broker_url) as c, channel_error(406) as err:
        declare_stream(c.channel(), "too-big-segments", stream_max_segment_size_bytes=3_000_000_001)
    assert "Exceeded max value for x-stream-max-segment-size-bytes" in str(err[0])


def test_tiny_segment_size_is_accepted_and_raised(broker_url: str) -> None:
    """RabbitMQ accepts any positive size; so does smartbroker (using 4 KiB at least)."""
    with connect(broker_url) as c:
        ch = c.channel()
        declare_stream(ch, "tiny-accepted", stream_max_segment_size_bytes=1)
        declare_stream(ch, "tiny-accepted", stream_max_segment_size_bytes=1)  # equivalent
        ch.queue_delete("tiny-accepted")

