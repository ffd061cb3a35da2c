"""Queue length limits (x-max-length, x-max-length-bytes) and the x-overflow modes,
each under publisher confirms; validation of the lifecycle queue arguments."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, drain, ready_count
from .lifecycle_helpers import collect, declare_dlq, dlx_args, strip_times


def publish_all(ch: BlockingChannel, queue: str, bodies: list[bytes], **props: Any) -> list[str]:
    """Publish under confirms; per message "ack" or "nack"."""
    outcome = []
    for body in bodies:
        try:
            ch.basic_publish("", queue, body, pika.BasicProperties(**props) if props else None)
            outcome.append("ack")
        except pika.exceptions.NackError:
            outcome.append("nack")
    return outcome


def test_max_length_default_drops_head(ch: BlockingChannel, qname: str) -> None:
    """x-max-length without x-overflow: drop-head, every publish confirmed; the oldest go."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length": 2})
    assert publish_all(ch, qname, [b"0", b"1", b"2", b"3"]) == ["ack"] * 4
    assert drain(ch, qname) == [b"2", b"3"]


def test_drop_head_dead_letters_oldest_as_maxlen(ch: BlockingChannel, qname: str) -> None:
    """drop-head: the oldest messages are dead-lettered with reason ``maxlen``, in order."""
    ch.confirm_delivery()
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **{"x-max-length": 2, "x-overflow": "drop-head"})
    ch.queue_declare(qname, exclusive=True, arguments=args)
    outcome = publish_all(ch, qname, [b"0", b"1", b"2", b"3"], expiration="60000")
    assert outcome == ["ack"] * 4
    dead = collect(ch, dlq, 2)
    assert [d.body for d in dead] == [b"0", b"1"]
    for d in dead:
        assert d.props.expiration is None
        assert strip_times(d.headers["x-death"]) == [
            {
                "count": 1,
                "reason": "maxlen",
                "queue": qname,
                "exchange": "",
                "routing-keys": [qname],
                "original-expiration": "60000",
            }
        ]
        assert d.headers["x-first-death-reason"] == "maxlen"
    assert drain(ch, qname) == [b"2", b"3"]


def test_reject_publish_nacks_and_keeps_old(ch: BlockingChannel, qname: str) -> None:
    """reject-publish: publishes beyond the limit are nacked (pika: NackError) and dropped;
    nothing is dead-lettered even with a DLX; the queued messages stay."""
    ch.confirm_delivery()
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **{"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.queue_declare(qname, exclusive=True, arguments=args)
    outcome = publish_all(ch, qname, [b"0", b"1", b"2", b"3"])
    assert outcome == ["ack", "ack", "nack", "nack"]
    assert drain(ch, qname) == [b"0", b"1"]
    # room again: accepted
    assert publish_all(ch, qname, [b"4"]) == ["ack"]
    assert drain(ch, qname) == [b"4"]
    assert ready_count(ch, dlq) == 0


def test_reject_publish_mandatory_is_nack_not_return(ch: BlockingChannel, qname: str) -> None:
    """A mandatory publish refused by reject-publish is nacked, not returned."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", qname, b"0", mandatory=True)
    with pytest.raises(pika.exceptions.NackError) as info:
        ch.basic_publish("", qname, b"1", mandatory=True)
    assert info.value.messages == []  # pika lists returned messages here: none
    assert drain(ch, qname) == [b"0"]


def test_reject_publish_dlx_nacks_and_dead_letters(ch: BlockingChannel, qname: str) -> None:
    """reject-publish-dlx: refused publishes are nacked AND dead-lettered with reason ``maxlen``."""
    ch.confirm_delivery()
    dlq = declare_dlq(ch, qname + ".dlq")
    args = dlx_args(dlq, **{"x-max-length": 2, "x-overflow": "reject-publish-dlx"})
    ch.queue_declare(qname, exclusive=True, arguments=args)
    outcome = publish_all(ch, qname, [b"0", b"1", b"2", b"3"], expiration="60000")
    assert outcome == ["ack", "ack", "nack", "nack"]
    dead = collect(ch, dlq, 2)
    assert [d.body for d in dead] == [b"2", b"3"]
    for d in dead:
        assert d.props.expiration is None
        assert strip_times(d.headers["x-death"]) == [
            {
                "count": 1,
                "reason": "maxlen",
                "queue": qname,
                "exchange": "",
                "routing-keys": [qname],
                "original-expiration": "60000",
            }
        ]
    assert drain(ch, qname) == [b"0", b"1"]


def test_max_length_counts_ready_not_unacked(ch: BlockingChannel, qname: str) -> None:
    """Unacked messages do not count towards x-max-length (reject-publish accepts again)."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish_all(ch, qname, [b"0", b"1"]) == ["ack", "nack"]
    method, _, body = ch.basic_get(qname, auto_ack=False)
    assert body == b"0"
    assert publish_all(ch, qname, [b"2", b"3"]) == ["ack", "nack"]
    ch.basic_ack(method.delivery_tag)
    assert drain(ch, qname) == [b"2"]


def test_max_length_zero(ch: BlockingChannel, qname: str) -> None:
    """x-max-length 0 with reject-publish refuses everything; with drop-head nothing stays."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    assert publish_all(ch, qname, [b"0"]) == ["nack"]
    other = qname + ".dh"
    ch.queue_declare(other, exclusive=True, arguments={"x-max-length": 0})
    assert publish_all(ch, other, [b"0"]) == ["ack"]
    assert ready_count(ch, other) == 0


def test_max_length_bytes_drop_head(ch: BlockingChannel, qname: str) -> None:
    """x-max-length-bytes counts body bytes of ready messages; the oldest are dropped."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length-bytes": 10})
    assert publish_all(ch, qname, [b"aaaa", b"bbbb", b"cccc"]) == ["ack"] * 3
    assert drain(ch, qname) == [b"bbbb", b"cccc"]


def test_max_length_bytes_oversized_message_empties_queue(ch: BlockingChannel, qname: str) -> None:
    """A single message larger than x-max-length-bytes (drop-head): it and everything before it go."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length-bytes": 10})
    assert publish_all(ch, qname, [b"aaaa", b"d" * 11]) == ["ack", "ack"]
    assert drain(ch, qname) == []


def test_max_length_bytes_reject_publish(ch: BlockingChannel, qname: str) -> None:
    ch.confirm_delivery()
    ch.queue_declare(
        qname, exclusive=True, arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"}
    )
    assert publish_all(ch, qname, [b"aaaa", b"bbbb", b"cccc", b"dd"]) == ["ack", "ack", "nack", "ack"]
    assert drain(ch, qname) == [b"aaaa", b"bbbb", b"dd"]


def test_max_length_and_bytes_both_apply(ch: BlockingChannel, qname: str) -> None:
    """Both limits set: whichever is hit first applies."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-length": 3, "x-max-length-bytes": 6})
    assert publish_all(ch, qname, [b"1", b"2", b"3", b"4"]) == ["ack"] * 4
    assert drain(ch, qname) == [b"2", b"3", b"4"]
    assert publish_all(ch, qname, [b"aaa", b"bbb", b"ccc"]) == ["ack"] * 3
    assert drain(ch, qname) == [b"bbb", b"ccc"]


@pytest.mark.parametrize(
    "args",
    [
        {"x-message-ttl": -1},
        {"x-message-ttl": "100"},
        {"x-expires": 0},
        {"x-expires": -5},
        {"x-max-length": -1},
        {"x-max-length-bytes": -1},
        {"x-overflow": "bogus"},
        {"x-max-priority": 256},
        {"x-max-priority": -1},
        {"x-dead-letter-routing-key": "k"},
        {"x-dead-letter-exchange": 5},
        {"x-single-active-consumer": "yes"},
    ],
    ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()),
)
def test_invalid_lifecycle_argument_406(conn: pika.BlockingConnection, qname: str, args: dict) -> None:
    """Invalid values: 406 PRECONDITION_FAILED on declare (e.g. a routing key without a DLX,
    zero x-expires, x-max-priority above 255), the queue is not created."""
    ch = conn.channel()
    with channel_error(406):
        ch.queue_declare(qname, exclusive=True, arguments=args)
    with channel_error(404):
        conn.channel().queue_declare(qname, passive=True)


def test_max_priority_255_accepted(ch: BlockingChannel, qname: str) -> None:
    ch.queue_declare(qname, exclusive=True, arguments={"x-max-priority": 255})
