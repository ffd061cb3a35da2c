"""The cluster link's sans-IO protocol: handshake, calls, batched channels, credit."""

from __future__ import annotations

import pytest
from link_pair import PUBLISH, SETTLE, Pair

from smartbroker.cluster import link_codec as codec
from smartbroker.cluster.link_codec import LinkAuthError, LinkProtocolError
from smartbroker.cluster.link_protocol import (
    NEED_DATA,
    Closed,
    LinkConnection,
    Messages,
    Ready,
    Request,
    Response,
    Role,
    State,
    Writable,
)


def test_handshake_with_the_same_secret_makes_both_ends_ready() -> None:
    pair = Pair().handshake()
    assert pair.events == {"a": [Ready("b")], "b": [Ready("a")]}
    assert pair.a.state is pair.b.state is State.READY


def test_a_wrong_secret_is_refused_by_the_acceptor_which_never_shows_its_proof() -> None:
    pair = Pair(secret_b=b"other")
    data = pair.a.data_to_send()
    pair.b.receive_data(data)
    assert pair.b.next_event() is NEED_DATA
    pair.a.receive_data(pair.b.data_to_send())  # the acceptor's HELLO
    assert pair.a.next_event() is NEED_DATA
    pair.b.receive_data(pair.a.data_to_send())  # the dialer's proof
    with pytest.raises(LinkAuthError, match="failed authentication"):
        pair.b.next_event()
    refusal = pair.b.data_to_send()
    assert codec.FrameType.AUTH.to_bytes(1, "big") not in refusal[4:5]
    pair.a.receive_data(refusal)
    event = pair.a.next_event()
    assert event == Closed("authentication failed")


def test_a_proof_cannot_be_reflected_back_to_its_sender() -> None:
    a = LinkConnection(Role.ACCEPTOR, "a", "c", b"k", {}, nonce=b"n" * 32)
    mirror = codec.proof(b"k", "c", "a", "b", b"m" * 32, b"n" * 32)  # a's own order
    a.receive_data(codec.hello(1 << 20, b"m" * 32, "c", "b"))
    assert a.next_event() is NEED_DATA
    a.receive_data(codec.frame(codec.FrameType.AUTH, mirror))
    with pytest.raises(LinkAuthError):
        a.next_event()


def test_another_cluster_or_the_same_node_name_is_refused() -> None:
    pair = Pair(cluster_b="other")
    pair.b.receive_data(pair.a.data_to_send())
    with pytest.raises(LinkProtocolError, match="in cluster 'c', not 'other'"):
        pair.b.next_event()
    same = LinkConnection(Role.ACCEPTOR, "a", "c", b"k", {})
    same.receive_data(codec.hello(1 << 20, b"m" * 32, "c", "a"))
    with pytest.raises(LinkProtocolError, match="own name"):
        same.next_event()


def test_nothing_but_the_handshake_before_authentication() -> None:
    b = LinkConnection(Role.ACCEPTOR, "b", "c", b"k", {})
    b.receive_data(codec.request(1, "purge", b""))
    with pytest.raises(LinkProtocolError, match="unexpected frame REQUEST"):
        b.next_event()
    big = LinkConnection(Role.ACCEPTOR, "b", "c", b"k", {})
    big.receive_data(codec.HEAD.pack(codec.PRE_AUTH_MAX_FRAME + 1, codec.FrameType.HELLO))
    with pytest.raises(LinkProtocolError, match="the limit is 4096"):
        big.next_event()


def test_requests_and_responses_carry_their_ids() -> None:
    pair = Pair().handshake()
    pair.a.request(7, "queue.purge", b'{"queue": "q"}')
    pair.pump()
    assert pair.events["b"][-1] == Request(7, "queue.purge", b'{"queue": "q"}')
    pair.b.respond(7, b"not found", code=404)
    pair.pump()
    assert pair.events["a"][-1] == Response(7, 404, b"not found")


def test_many_sends_in_one_pass_are_one_frame_and_one_write() -> None:
    pair = Pair().handshake()
    pair.wire["a"].clear()
    for i in range(1000):
        assert pair.a.send(PUBLISH, (i, 1, "rk", b"\x00\x01", f"body {i}"))
    pair.pump()
    assert len(pair.wire["a"]) == 1
    batches = [e for e in pair.events["b"] if isinstance(e, Messages)]
    assert len(batches) == 1
    assert batches[0].items[999] == (999, 1, b"rk", b"\x00\x01", b"body 999")
    assert [item[0] for item in batches[0].items] == list(range(1000))
    assert not any(isinstance(e, Writable) for e in pair.events["a"])  # never blocked


def test_a_big_batch_is_cut_into_bounded_frames() -> None:
    pair = Pair(window=1 << 24).handshake()
    body = b"x" * 10_000
    for i in range(100):  # 1 MB
        pair.a.send(PUBLISH, (i, 0, "", b"", body))
    pair.pump()
    batches = [e for e in pair.events["b"] if isinstance(e, Messages)]
    assert len(batches) >= 1_000_000 // codec.BATCH_BYTES
    assert [i[0] for e in batches for i in e.items] == list(range(100))


def test_a_sender_without_credit_keeps_items_back_until_the_receiver_grants() -> None:
    pair = Pair(window=10_000).handshake()
    pair.b.hold(PUBLISH)
    sent = 0
    while pair.a.send(PUBLISH, (sent, 0, "", b"", b"y" * 1000)):
        sent += 1
    for extra in range(50):  # a careless caller: kept here, not on the wire
        pair.a.send(PUBLISH, (sent + 1 + extra, 0, "", b"", b"y" * 1000))
    pair.pump()
    got = [i for e in pair.events["b"] if isinstance(e, Messages) for i in e.items]
    assert len(got) == sent + 1  # one window's worth (the last one overdraws it)
    assert pair.a.waiting_bytes(PUBLISH) >= 50 * 1000
    assert not pair.a.writable(PUBLISH)
    pair.b.release(PUBLISH)
    pair.pump(rounds=100)
    got = [i for e in pair.events["b"] if isinstance(e, Messages) for i in e.items]
    assert [i[0] for i in got] == list(range(sent + 51))
    assert pair.a.writable(PUBLISH) and pair.a.waiting_bytes(PUBLISH) == 0
    assert any(isinstance(e, Writable) for e in pair.events["a"])


def test_a_call_after_sends_arrives_after_them() -> None:
    pair = Pair().handshake()
    pair.a.send(SETTLE, (1, 0))
    pair.a.request(1, "basic.cancel", b"")
    pair.a.send(SETTLE, (2, 0))
    pair.pump()
    kinds = [type(e).__name__ for e in pair.events["b"][1:]]
    assert kinds == ["Messages", "Request", "Messages"]


def test_messages_on_an_unknown_channel_or_a_short_item_are_refused() -> None:
    pair = Pair().handshake()
    pair.b.receive_data(codec.MESSAGES_HEAD.pack(7, codec.FrameType.MESSAGES, 99, 0))
    with pytest.raises(LinkProtocolError, match="unknown channel 99"):
        pair.b.next_event()
    pair = Pair().handshake()
    pair.b.receive_data(codec.MESSAGES_HEAD.pack(7 + 3, codec.FrameType.MESSAGES, 2, 1) + b"abc")
    with pytest.raises(LinkProtocolError, match="overruns"):
        pair.b.next_event()


def test_an_item_of_the_wrong_width_is_a_programming_error() -> None:
    pair = Pair().handshake()
    with pytest.raises(ValueError, match="takes 5 fields"):
        pair.a.send(PUBLISH, (1, 0, "rk"))


def test_sending_before_the_handshake_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="not ready"):
        Pair().a.request(1, "m", b"")


def test_reads_that_end_mid_frame_do_not_grow_the_buffer() -> None:
    pair = Pair(window=1 << 26).handshake()
    for i in range(2000):
        pair.a.send(PUBLISH, (i, 0, "rk", b"", b"z" * 500))
    data = pair.a.data_to_send()
    largest = 0
    got = 0
    for start in range(0, len(data), 7000):  # every read ends inside a frame
        pair.b.receive_data(data[start:start + 7000])
        while (event := pair.b.next_event()) is not NEED_DATA:
            got += len(event.items)
        largest = max(largest, len(pair.b._in))
    assert got == 2000
    assert largest < codec.BATCH_BYTES + 2 * 7000
