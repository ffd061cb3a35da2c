"""Compacted stream queues over AMQP: the newest value per key survives with its offset,
tombstones remove a key after ``x-delete-retention``. Run against a private broker."""

from __future__ import annotations

import time
from typing import Any

import pika
import pytest

pytestmark = pytest.mark.extension

SEGMENT = 4096
BIG = b"#" * 3000  # a final value this big opens a segment of its own


def stream_args(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-cleanup-policy": "compact",
            "x-stream-max-segment-size-bytes": SEGMENT, **extra}


def connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def publish(ch: Any, queue: str, items: list[tuple[str, bytes]]) -> None:
    """Publish (key, body) pairs with confirms; the key goes in ``x-message-key``."""
    for key, body in items:
        ch.basic_publish("", queue, body, pika.BasicProperties(headers={"x-message-key": key}),
                         mandatory=True)


def read_all(url: str, queue: str, until_offset: int, start: Any = "first",
             timeout: float = 5.0) -> list[tuple[str, bytes, int]]:
    """(key, body, x-stream-offset) of every delivery from ``start`` up to ``until_offset``."""
    got: list[tuple[str, bytes, int]] = []
    with connect(url) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)

        def on_message(chan: Any, method: Any, props: Any, body: bytes) -> None:
            headers = props.headers or {}
            key = headers.get("x-message-key")
            got.append((key.decode() if isinstance(key, bytes) else key, body,
                        headers["x-stream-offset"]))
            chan.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_message, arguments={"x-stream-offset": start})
        deadline = time.monotonic() + timeout
        while (not got or got[-1][2] < until_offset) and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    return got


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s; last state: {last!r}")


def test_compaction_keeps_the_newest_value_per_key_at_its_offset(own_broker):
    url, queue = own_broker.url, "compacted.prices"
    with connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments=stream_args())
        keys = ["apple", "pear", "plum"]
        updates = [(keys[i % 3], b"%s=%d" % (keys[i % 3].encode(), i)) for i in range(600)]
        finals = [(k, k.encode() + b"=final" + BIG) for k in keys]
        publish(ch, queue, updates + finals)
    last = len(updates) + len(finals) - 1
    expected = [(k, body, len(updates) + i) for i, (k, body) in enumerate(finals)]

    def compacted() -> list | None:
        got = read_all(url, queue, last)
        return got if got == expected else None

    wait_for(compacted)
    # a reader starting at a compacted-away offset begins at the next survivor
    assert read_all(url, queue, last, start=5)[0][2] == len(updates)
    # a reader of the compacted stream sees the same after a restart
    own_broker.restart()
    assert read_all(url, queue, last) == expected


def test_tombstone_removes_the_key_after_delete_retention(own_broker):
    url, queue = own_broker.url, "compacted.users"
    with connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments=stream_args(**{"x-delete-retention": "1s"}))
        values = [(k, b"%s-v%d" % (k.encode(), i)) for i in range(100) for k in ("alice", "bob")]
        publish(ch, queue, values + [("alice", b""), ("bob", b"bob-final" + BIG)])
    bob_final = len(values) + 1
    tombstone_at = len(values)

    def keys_left(*allowed: list[str]) -> Any:
        def check() -> list | None:
            got = read_all(url, queue, bob_final)
            return got if [k for k, _, _ in got] in allowed else None
        return check

    got = wait_for(keys_left(["alice", "bob"], ["bob"]))  # older values compacted away
    if got[0][0] == "alice":  # the tombstone is still within its retention
        assert got[0] == ("alice", b"", tombstone_at)
        got = wait_for(keys_left(["bob"]))
    assert got == [("bob", b"bob-final" + BIG, bob_final)]


def test_compaction_does_not_touch_delete_only_streams(own_broker):
    url, queue = own_broker.url, "plain.events"
    with connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments={
            "x-queue-type": "stream", "x-stream-max-segment-size-bytes": SEGMENT})
        publish(ch, queue, [("same", b"v%d" % i + BIG[:200]) for i in range(100)])
    first = read_all(url, queue, 99)
    assert [off for _, _, off in first] == list(range(100))
