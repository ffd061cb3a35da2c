"""The seam of a connection handed between workers (server/handoff.py): ``adopt`` starts
a protocol connection open with what was negotiated elsewhere, ``unread`` is the input
that travels, and ``replay_frames`` gives back the frames of the event being moved, which
a fresh connection parses into the same event."""

from __future__ import annotations

from types import SimpleNamespace

from pamqp import commands

from smartbroker.protocol.connection import Connection
from smartbroker.protocol.events import NEED_DATA, Method, Publish
from smartbroker.protocol.states import State
from smartbroker.server.handoff import replay_frames
from tests.unit.protocol.protocol_pair import method, publish


def adopted(frame_max: int = 4096) -> Connection:
    conn = Connection()
    conn.adopt(frame_max, 100, 30, [1, 3])
    return conn


def test_adopt_starts_open_with_the_negotiated_values_and_channels() -> None:
    conn = adopted()
    assert conn.state is State.OPEN
    assert (conn.frame_max, conn.channel_max, conn.heartbeat) == (4096, 100, 30)
    conn.receive_data(publish(3, b"x" * 10000, frame_max=4096))
    event = conn.next_event()
    assert type(event) is Publish and event.channel == 3 and event.body == b"x" * 10000
    assert conn.next_event() is NEED_DATA


def test_unread_is_the_input_not_yet_parsed() -> None:
    conn = adopted()
    second = method(1, commands.Basic.Qos(prefetch_count=7))
    conn.receive_data(publish(1) + second)
    assert type(conn.next_event()) is Publish
    assert conn.unread() == second


def test_nothing_travels_mid_message_or_after_eof() -> None:
    conn = adopted()
    data = publish(1, b"y" * 9000, frame_max=4096)
    conn.receive_data(data[:5000])  # the method, the header and part of the body
    assert conn.next_event() is NEED_DATA
    assert conn.unread() is None
    conn = adopted()
    conn.receive_data(b"")
    assert conn.unread() is None


def test_replayed_frames_parse_into_the_same_event() -> None:
    props = commands.Basic.Properties(content_type="text/plain", delivery_mode=2,
                                      headers={"k": "v"})
    source = adopted()
    source.receive_data(publish(1, b"z" * 9000, exchange="ex", routing_key="rk", props=props,
                                mandatory=True, frame_max=4096)
                        + method(3, commands.Basic.Consume(queue="q", consumer_tag="t")))
    events = [source.next_event(), source.next_event()]
    conn = SimpleNamespace(frame_max=4096)
    target = adopted()
    target.receive_data(b"".join(replay_frames(conn, e) for e in events))  # type: ignore[arg-type]
    again = [target.next_event(), target.next_event()]
    assert type(again[0]) is Publish
    assert (again[0].route[:2], again[0].mandatory, again[0].header, again[0].flags,
            again[0].body) == (("ex", "rk"), True, events[0].header, events[0].flags,
                               b"z" * 9000)
    assert type(again[1]) is Method and again[1].channel == 3
    assert (again[1].method.queue, again[1].method.consumer_tag) == ("q", "t")
