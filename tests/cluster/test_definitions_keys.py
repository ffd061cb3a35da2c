"""The etcd key layout of definitions: any name is one safe segment, and a value this
version cannot read is a ValueError (logged and skipped by the store), never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartbroker.cluster import definitions_keys as K
from smartbroker.store.definitions import BindingDef, QueueDef


@given(st.text(max_size=300))
def test_any_name_is_one_segment_and_comes_back(name: str) -> None:
    segment = K.seg(name)
    assert b"/" not in segment
    assert K.unseg(segment) == name


@given(st.text(max_size=50), st.text(max_size=50))
def test_one_vhosts_prefix_holds_only_its_own_keys(vhost: str, other: str) -> None:
    own = K.key("queues", vhost, "q")
    assert own.startswith(K.prefix("queues", vhost))
    if other != vhost:
        assert not K.key("queues", other, "q").startswith(K.prefix("queues", vhost))


def test_records_round_trip_through_their_entries() -> None:
    q = QueueDef("/", "a/b", arguments={"x": b"\x01", "n": [1, {"$b": "x"}]})
    entry = K.queue(q)
    assert K.split(entry.key) == ("queues", ["/", "a/b"])
    assert K.decode(entry.key, entry.value) == ("queues", q)
    b1 = BindingDef("/", "ex", "q", "queue", "k", {"a": 1})
    b2 = BindingDef("/", "ex", "q", "queue", "k", {"a": 2})
    assert K.binding_key(b1) != K.binding_key(b2)  # the arguments are part of the identity


@pytest.mark.parametrize("key, value", [
    (K.key("queues", "/", "q"), b"\xff\xfe"),
    (K.key("queues", "/", "q"), b"{not json"),
    (K.key("queues", "/", "q"), b"[1, 2]"),
    (K.key("queues", "/", "q"), b'{"unknown_field": 1}'),
    (K.key("user_scram", "u"), b'{"SCRAM-SHA-256": 5}'),
    (K.key("nonsense", "x"), b"{}"),
])
def test_unreadable_definitions_are_value_errors(key: bytes, value: bytes) -> None:
    with pytest.raises(ValueError):
        K.decode(key, value)
