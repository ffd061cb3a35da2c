"""The same byte stream cut at any points gives the same events (content assembly,
frames split across reads, several frames per read)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from protocol_pair import Pair, method, publish

from smartbroker.protocol.events import Method, Publish

_names = st.from_regex(r"[a-zA-Z0-9_.:-]{0,20}", fullmatch=True)
_props = st.builds(commands.Basic.Properties,
                   content_type=st.none() | st.text(max_size=10),
                   delivery_mode=st.none() | st.sampled_from([1, 2]),
                   headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=5),
                                                       st.integers(0, 1000), max_size=3))
_message = st.tuples(st.integers(1, 3), st.binary(max_size=10000), _names, _names, _props,
                     st.booleans())


def _stream(messages: list[tuple]) -> bytes:
    parts = [method(n, commands.Channel.Open()) for n in (1, 2, 3)]
    for channel, body, exchange, rk, props, mandatory in messages:
        parts.append(publish(channel, body, exchange, rk, props, mandatory, frame_max=4096))
        parts.append(method(channel, commands.Basic.Ack(delivery_tag=7)))
        parts.append(method(channel, commands.Basic.Qos(prefetch_count=3)))
    return b"".join(parts)


def _events(stream: bytes, cuts: list[int]) -> list[tuple]:
    pair = Pair()
    pair.handshake(frame_max=4096)
    out: list[tuple] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        chunk = stream[start:cut]
        for event in pair.feed(chunk) if chunk else ():
            if isinstance(event, Publish):
                out.append(("publish", event.channel, event.route, event.mandatory,
                            event.header, event.flags, event.body))
            elif isinstance(event, Method):
                out.append(("method", event.channel, event.method.name))
            else:
                out.append((type(event).__name__, getattr(event, "channel", None)))
        start = max(start, cut)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(_message, min_size=1, max_size=4), st.data())
def test_any_chunking_gives_the_same_events(messages: list[tuple], data: st.DataObject) -> None:
    stream = _stream(messages)
    whole = _events(stream, [])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert _events(stream, cuts) == whole
    published = [e for e in whole if e[0] == "publish"]
    assert [(e[1], e[6]) for e in published] == [(m[0], m[1]) for m in messages]


def test_one_byte_at_a_time() -> None:
    stream = _stream([(1, b"x" * 9000, "amq.topic", "a.b", commands.Basic.Properties(), False)])
    assert _events(stream, list(range(len(stream)))) == _events(stream, [])
