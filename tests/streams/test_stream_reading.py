"""Reading a stream: offset specs, independent readers, prefetch as credit, refusals.

Everything here passes against RabbitMQ 3.10 too, except tests marked ``extension``.
"""

from __future__ import annotations

import datetime
import time

import pytest
from stream_helpers import Reader, publish, pump_until, quiet, read_all

from tests.integration.helpers import channel_error, connect, connection_error


def filled(ch, stream, n=10):
    q = stream()
    publish(ch, q, [f"m{i}" for i in range(n)])
    return q


def test_first_reads_everything_in_order_with_offsets(ch, stream, broker_url):
    q = filled(ch, stream)
    got = read_all(broker_url, q, 10)
    assert [g.text for g in got] == [f"m{i}" for i in range(10)]
    assert [g.offset for g in got] == list(range(10))
    assert all(isinstance(g.offset, int) for g in got)
    assert not any(g.redelivered for g in got)


def test_next_is_the_default_and_sees_only_new_messages(ch, stream, broker_url, readers):
    q = filled(ch, stream)
    default = readers(broker_url, q)
    explicit = readers(broker_url, q, args={"x-stream-offset": "next"})
    quiet([default, explicit])
    assert default.got == [] and explicit.got == []
    publish(ch, q, ["new1", "new2"])
    pump_until([default, explicit], lambda: len(default.got) == 2 and len(explicit.got) == 2)
    for r in (default, explicit):
        assert r.bodies == ["new1", "new2"] and r.offsets == [10, 11]


def test_last_starts_at_the_end(ch, stream, broker_url, readers):
    q = filled(ch, stream, 50)
    publish(ch, q, ["final"])  # its own (confirmed) write, so its own chunk on RabbitMQ too
    r = readers(broker_url, q, args={"x-stream-offset": "last"})
    pump_until([r], lambda: "final" in r.bodies)
    assert "m0" not in r.bodies and r.got[-1].offset == 50
    publish(ch, q, ["after"])
    pump_until([r], lambda: "after" in r.bodies)


@pytest.mark.extension
def test_last_is_exactly_the_last_message(ch, stream, broker_url, readers):
    q = filled(ch, stream, 20)
    r = readers(broker_url, q, args={"x-stream-offset": "last"})
    pump_until([r], lambda: len(r.got) >= 1)
    quiet([r])
    assert r.bodies == ["m19"] and r.offsets == [19]


def test_integer_offset(ch, stream, broker_url):
    q = filled(ch, stream)
    got = read_all(broker_url, q, 4, args={"x-stream-offset": 6})
    assert [g.text for g in got] == ["m6", "m7", "m8", "m9"]
    assert [g.offset for g in got] == [6, 7, 8, 9]


def test_timestamp_offset(ch, stream, broker_url, readers):
    q = filled(ch, stream, 5)
    # wait for the next whole second (AMQP timestamps have 1 s resolution): a precondition,
    # not a guess - everything above is strictly older than `boundary`
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.05)
    boundary = datetime.datetime.fromtimestamp(int(time.time()), tz=datetime.UTC)
    publish(ch, q, ["late1", "late2"])
    r = readers(broker_url, q, args={"x-stream-offset": boundary})
    pump_until([r], lambda: len(r.got) >= 2)
    quiet([r], 0.2)
    assert r.bodies == ["late1", "late2"] and r.offsets == [5, 6]


def test_interval_offset(ch, stream, broker_url):
    q = filled(ch, stream, 5)
    got = read_all(broker_url, q, 5, args={"x-stream-offset": "10m"})
    assert [g.text for g in got] == [f"m{i}" for i in range(5)]


def test_any_number_of_independent_readers(ch, stream, broker_url, readers):
    q = filled(ch, stream, 30)
    rs = [readers(broker_url, q, args={"x-stream-offset": "first"}, prefetch=p, ack=a)
          for p, a in ((1000, True), (7, True), (1000, False), (50, True))]
    slow = rs[1]
    pump_until(rs, lambda: all(len(r.got) >= 30 for r in rs if r is not slow) and len(slow.got) >= 30)
    for r in rs:
        assert r.bodies == [f"m{i}" for i in range(30)]
        assert r.offsets == list(range(30))


def test_prefetch_is_credit(ch, stream, broker_url, readers):
    q = filled(ch, stream)
    r = readers(broker_url, q, args={"x-stream-offset": "first"}, prefetch=2, ack=False)
    pump_until([r], lambda: len(r.got) >= 2)
    quiet([r])
    assert r.bodies == ["m0", "m1"]  # exactly the credit, no more
    r.ack_msg(r.got[0])
    pump_until([r], lambda: len(r.got) >= 3)
    quiet([r])
    assert r.bodies == ["m0", "m1", "m2"]
    r.ch.basic_ack(r.got[2].tag, multiple=True)
    pump_until([r], lambda: len(r.got) >= 5)
    quiet([r])
    assert r.bodies == ["m0", "m1", "m2", "m3", "m4"]


def test_acks_never_delete(ch, stream, broker_url, readers):
    q = filled(ch, stream)
    r = readers(broker_url, q, args={"x-stream-offset": "first"}, prefetch=3)
    pump_until([r], lambda: len(r.got) >= 10)
    assert len(r.acked) == 10
    r.sync()
    second = read_all(broker_url, q, 10)
    assert [g.text for g in second] == [f"m{i}" for i in range(10)]
    assert [g.offset for g in second] == list(range(10))


def test_consume_without_prefetch_is_refused(ch, stream, broker_url):
    q = filled(ch, stream, 1)
    with connect(broker_url) as c, channel_error(406) as err:
        c.channel().basic_consume(q, lambda *a: None)
    assert "consumer prefetch count is not set" in err[0].reply_text


def test_consume_with_no_ack_and_no_prefetch_is_refused(ch, stream, broker_url):
    q = filled(ch, stream, 1)
    with connect(broker_url) as c, channel_error(406) as err:
        c.channel().basic_consume(q, lambda *a: None, auto_ack=True)
    assert "consumer prefetch count is not set" in err[0].reply_text


def test_consume_with_no_ack_is_refused(ch, stream, broker_url):
    q = filled(ch, stream, 1)
    c = connect(broker_url)
    with connection_error(540) as err:
        chan = c.channel()
        chan.basic_qos(prefetch_count=10)
        chan.basic_consume(q, lambda *a: None, auto_ack=True)
    assert "automatic acknowledgement not supported" in err[0].reply_text


def test_basic_get_is_refused(ch, stream, broker_url):
    q = filled(ch, stream, 1)
    c = connect(broker_url)
    with connection_error(540):
        c.channel().basic_get(q)
    assert not c.is_open


def test_purge_is_refused(ch, stream, broker_url):
    q = filled(ch, stream, 3)
    c = connect(broker_url)
    with connection_error(540):
        c.channel().queue_purge(q)
    assert [g.text for g in read_all(broker_url, q, 3)] == ["m0", "m1", "m2"]  # untouched


@pytest.mark.parametrize("method", ["nack", "reject"])
def test_nack_and_reject_are_refused(ch, stream, broker_url, method):
    q = filled(ch, stream, 3)
    r = Reader(broker_url, q, args={"x-stream-offset": "first"}, prefetch=10, ack=False)
    try:
        pump_until([r], lambda: len(r.got) >= 1)
        tag = r.got[0].tag
        with connection_error(540):
            if method == "nack":
                r.ch.basic_nack(tag, requeue=True)
            else:
                r.ch.basic_reject(tag, requeue=True)
            pump_until([r], lambda: False, timeout=5)
        assert not r.conn.is_open
    finally:
        r.close()


@pytest.mark.extension
@pytest.mark.parametrize("spec", ["tomorrow", -3, "10 minutes"])
def test_bad_offset_spec_is_refused(ch, stream, broker_url, spec):
    q = filled(ch, stream, 1)
    with connect(broker_url) as c, channel_error(406) as err:
        chan = c.channel()
        chan.basic_qos(prefetch_count=10)
        chan.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": spec})
    assert "x-stream-offset" in err[0].reply_text


