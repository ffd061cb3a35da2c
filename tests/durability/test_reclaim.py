"""Issue 12: one parked message must not pin all the acked traffic behind it on disk.

The broker runs with 256 KiB message-store segments (SMARTBROKER_MESSAGE_SEGMENT_BYTES),
so a few MiB of traffic make dozens of segments. Queue A holds one message nobody
consumes; traffic goes through queue B with acks. Mostly-acked segments are rewritten
(store/reclaim.py), so the store stays a few segments big; A's message and B's unacked
ones survive a restart and a kill -9, including a kill in the middle of the traffic.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.conftest import started_broker, with_log_on_failure
from tests.durability.test_crash import JOIN_TIMEOUT, Consumer, Publisher, kill_after, msg_id

pytestmark = pytest.mark.extension

SEGMENT = 256 * 1024
BODY = b"t" * 4096
ROUNDS, PER_ROUND = 6, 600  # ~14 MiB through B


@pytest.fixture
def small_segments(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``sb`` (conftest.py) with small message-store segments from its first start."""
    env = {"SMARTBROKER_MESSAGE_SEGMENT_BYTES": str(SEGMENT)}
    with started_broker(tmp_path / "data", env=env) as proc:
        yield from with_log_on_failure(proc, request)


def poll(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def store_bytes(sb: Any) -> int:
    """Bytes in the message store's segments. The running broker deletes segments while
    this lists them: a file gone before its stat counts as nothing."""
    total = 0
    for p in sb.messages_dir.glob("*.log"):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def test_parked_message_does_not_pin_acked_segments(small_segments: Any) -> None:
    sb = small_segments
    sb.declare("A")
    sb.declare("B")
    sb.publish("A", [b"parked"])
    for r in range(ROUNDS):
        sb.publish("B", [BODY + b"%d-%d" % (r, i) for i in range(PER_ROUND)])
        assert len(sb.drain("B")) == PER_ROUND
    sb.publish("B", [b"left-%d" % i for i in range(3)])
    pushed = ROUNDS * PER_ROUND * len(BODY)
    poll(lambda: store_bytes(sb) < 6 * SEGMENT, timeout=20, what="acked segments reclaimed")
    print(f"pushed {pushed >> 20} MiB through B; store now {store_bytes(sb) >> 10} KiB")

    sb.kill_restart()
    assert sb.message_count("A") == 1 and sb.message_count("B") == 3
    sb.restart()
    assert [m.body for m in sb.drain("B")] == [b"left-%d" % i for i in range(3)]
    got = sb.drain("A")
    assert [m.body for m in got] == [b"parked"]


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_during_traffic_and_reclaim(small_segments: Any, seed: int) -> None:
    """test_crash.py's publish+consume crash, with a parked message and small segments so
    that segments are being rewritten when the kill lands."""
    sb = small_segments
    rng = random.Random(seed)
    sb.declare("A")
    sb.declare("B")
    sb.publish("A", [b"parked"])
    pre = Publisher(sb.url, "B", count=3000, window=500)
    pre.run()
    assert pre.error is None
    warm = Consumer(sb.url, "B")  # ack most of the backlog: segments become reclaimable
    pub = Publisher(sb.url, "B", first=3000, count=6000)
    pub.start()
    warm.start()
    poll(lambda: len(warm.acked) > 2500, timeout=20, what="backlog consumed")
    kill_after(sb, warm.first_ack, rng)
    pub.join(JOIN_TIMEOUT)
    warm.join(JOIN_TIMEOUT)
    assert not pub.is_alive() and not warm.is_alive()
    sb.start()
    assert [m.body for m in sb.drain("A")] == [b"parked"]
    got = sb.drain("B")
    ids = [msg_id(m.body) for m in got]
    confirmed = pre.confirmed | pub.confirmed
    assert len(ids) == len(set(ids)), "a message came back twice"
    lost = confirmed - warm.acked - set(ids)
    assert not lost, f"{len(lost)} confirmed, unacked message(s) lost: {sorted(lost)[:10]}"
    assert ids == sorted(ids), "queue order not kept"
    back = [m for m in got if msg_id(m.body) in warm.acked]
    assert all(m.redelivered for m in back), "acked, back, and not redelivered"
