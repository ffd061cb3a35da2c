"""Hypothesis against the cluster link's decoder: garbage only ever gives a
``LinkProtocolError`` (never another exception, never a hang), and any items round-trip."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from link_pair import PUBLISH, Pair

from smartbroker.cluster import link_codec as codec
from smartbroker.cluster.link_codec import LinkProtocolError
from smartbroker.cluster.link_protocol import NEED_DATA, LinkConnection, Messages, Role

KINDS = st.sampled_from(list(codec.FrameType) + [0, 9, 255])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Mostly well-framed frames of any type with random bodies, sometimes raw garbage."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    body = draw(st.binary(max_size=48))
    size = draw(st.one_of(st.just(len(body) + 1), st.integers(0, 2**32 - 1)))
    return codec.HEAD.pack(size, draw(KINDS)) + body


def _drain(conn: LinkConnection, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        conn.receive_data(data[start:cut])
        start = max(start, cut)
        try:
            while conn.next_event() is not NEED_DATA:
                pass
        except LinkProtocolError:
            return


@settings(max_examples=300, deadline=None)
@given(st.lists(frames(), max_size=6), st.lists(st.integers(0, 400), max_size=4))
def test_garbage_before_authentication_is_refused_cleanly(parts: list[bytes],
                                                          cuts: list[int]) -> None:
    conn = LinkConnection(Role.ACCEPTOR, "b", "c", b"k", {PUBLISH.number: PUBLISH})
    _drain(conn, b"".join(parts), cuts)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames(), max_size=6), st.lists(st.integers(0, 400), max_size=4))
def test_garbage_after_authentication_is_refused_cleanly(parts: list[bytes],
                                                         cuts: list[int]) -> None:
    pair = Pair().handshake()
    _drain(pair.b, b"".join(parts), cuts)


ITEMS = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 255), st.text(max_size=20),
                  st.binary(max_size=30), st.binary(max_size=300))


@settings(max_examples=100, deadline=None)
@given(st.lists(ITEMS, max_size=50))
def test_items_round_trip_in_order(items: list[tuple]) -> None:
    pair = Pair().handshake()
    for item in items:
        pair.a.send(PUBLISH, item)
    pair.pump()
    got = [i for e in pair.events["b"] if isinstance(e, Messages) for i in e.items]
    assert got == [(s, f, rk.encode(), p, b) for s, f, rk, p, b in items]
