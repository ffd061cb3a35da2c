"""Headers exchange: x-match modes, void values, type classes, validation (RabbitMQ rules)."""

from __future__ import annotations

import pytest

from smartbroker.errors import ChannelError
from smartbroker.exchanges.headers import HeadersExchange

# id, binding arguments, message headers (None = no headers property), expected match
CASES = [
    # x-match all (the default)
    ("all-default-equal", {"a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ("all-explicit-equal", {"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ("all-extra-headers-ok", {"x-match": "all", "a": 1}, {"a": 1, "z": 9}, True),
    ("all-one-missing", {"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ("all-one-different", {"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
    ("all-no-headers", {"x-match": "all", "a": 1}, None, False),
    ("all-ignores-x-keys", {"x-match": "all", "a": 1, "x-k": "v"}, {"a": 1}, True),
    ("all-ignores-x-keys-even-if-different", {"x-match": "all", "x-k": "v"}, {"x-k": "w"}, True),
    # x-match any
    ("any-one-equal", {"x-match": "any", "a": 1, "b": "x"}, {"b": "x"}, True),
    ("any-none-equal", {"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "y"}, False),
    ("any-none-present", {"x-match": "any", "a": 1}, {"c": 1}, False),
    ("any-no-headers", {"x-match": "any", "a": 1}, None, False),
    ("any-ignores-x-keys", {"x-match": "any", "x-k": "v"}, {"x-k": "v"}, False),
    ("any-x-key-not-enough", {"x-match": "any", "x-k": "v", "a": 1}, {"x-k": "v", "a": 2}, False),
    # -with-x variants include x- keys (but never x-match itself)
    ("all-with-x-equal", {"x-match": "all-with-x", "x-k": "v", "a": 1}, {"x-k": "v", "a": 1},
     True),
    ("all-with-x-missing-x-key", {"x-match": "all-with-x", "x-k": "v", "a": 1}, {"a": 1}, False),
    ("all-with-x-different-x-key", {"x-match": "all-with-x", "x-k": "v"}, {"x-k": "w"}, False),
    ("all-with-x-no-x-match-header-needed", {"x-match": "all-with-x", "a": 1}, {"a": 1}, True),
    ("any-with-x-x-key-equal", {"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "v"}, True),
    ("any-with-x-nothing-equal", {"x-match": "any-with-x", "x-k": "v"}, {"x-k": "w"}, False),
    # void binding values match on presence
    ("void-all-present", {"x-match": "all", "a": None}, {"a": "anything"}, True),
    ("void-all-present-void-header", {"x-match": "all", "a": None}, {"a": None}, True),
    ("void-all-absent", {"x-match": "all", "a": None}, {"b": 1}, False),
    ("void-any-present", {"x-match": "any", "a": None, "b": 1}, {"a": 0}, True),
    ("void-any-absent", {"x-match": "any", "a": None}, {}, False),
    ("void-header-vs-value", {"x-match": "all", "a": 1}, {"a": None}, False),
    # type classes: an int binding matches ints only
    ("int-vs-int", {"a": 1}, {"a": 1}, True),
    ("int-vs-big-int", {"a": 1}, {"a": 2**40}, False),
    ("big-int-vs-big-int", {"a": 2**40}, {"a": 2**40}, True),
    ("int-vs-float", {"a": 1}, {"a": 1.0}, False),
    ("int-vs-bool-true", {"a": 1}, {"a": True}, False),
    ("int-zero-vs-bool-false", {"a": 0}, {"a": False}, False),
    ("int-vs-str", {"a": 1}, {"a": "1"}, False),
    ("float-vs-int", {"a": 2.0}, {"a": 2}, False),
    ("float-vs-float", {"a": 2.5}, {"a": 2.5}, True),
    ("bool-vs-bool", {"a": True}, {"a": True}, True),
    ("bool-vs-other-bool", {"a": True}, {"a": False}, False),
    ("bool-vs-int", {"a": True}, {"a": 1}, False),
    ("str-vs-str", {"a": "x"}, {"a": "x"}, True),
    ("str-vs-bytes-same-text", {"a": "x"}, {"a": b"x"}, True),
    ("bytes-vs-str-same-text", {"a": b"x"}, {"a": "x"}, True),
    ("str-case-sensitive", {"a": "x"}, {"a": "X"}, False),
    ("key-case-sensitive", {"a": "x"}, {"A": "x"}, False),
    # nested values compare by value
    ("table-equal", {"a": {"k": [1, "v"]}}, {"a": {"k": [1, "v"]}}, True),
    ("table-different", {"a": {"k": 1}}, {"a": {"k": 2}}, False),
    ("array-equal", {"a": [1, 2]}, {"a": [1, 2]}, True),
    ("array-vs-str", {"a": [1]}, {"a": "[1]"}, False),
    # empty patterns
    ("empty-all-matches-everything", {}, {"a": 1}, True),
    ("empty-all-matches-no-headers", {}, None, True),
    ("explicit-empty-all", {"x-match": "all"}, {}, True),
    ("only-x-keys-all", {"x-match": "all", "x-a": 1}, None, True),
    ("empty-any-matches-nothing", {"x-match": "any"}, {"a": 1}, False),
    ("empty-any-no-headers", {"x-match": "any"}, None, False),
    ("empty-all-with-x", {"x-match": "all-with-x"}, None, True),
    ("empty-any-with-x", {"x-match": "any-with-x"}, {"x-match": "any-with-x"}, False),
    # x-match given as bytes (longstr that pamqp could not decode as text)
    ("bytes-x-match-any", {"x-match": b"any", "a": 1, "b": 2}, {"b": 2}, True),
    ("bytes-x-match-all", {"x-match": b"all", "a": 1, "b": 2}, {"b": 2}, False),
]


@pytest.mark.parametrize(("arguments", "headers", "expected"),
                         [pytest.param(a, h, e, id=i) for i, a, h, e in CASES])
def test_headers_match(arguments, headers, expected):
    ex = HeadersExchange()
    ex.validate_binding("", arguments)
    ex.bind("q", "", arguments)
    assert ("q" in set(ex.route("ignored.routing.key", headers))) is expected


def test_routing_key_is_ignored():
    ex = HeadersExchange()
    ex.bind("q", "some-key", {"a": 1})
    assert set(ex.route("other-key", {"a": 1})) == {"q"}
    assert set(ex.route("some-key", {"a": 2})) == set()


def test_several_matching_bindings_route_each_destination_once():
    ex = HeadersExchange()
    ex.bind("q1", "", {"x-match": "any", "a": 1})
    ex.bind("q1", "", {"x-match": "all", "b": 2})
    ex.bind("q2", "", {"x-match": "all", "a": 1, "b": 2})
    ex.bind("q3", "", {"x-match": "all", "c": 3})
    assert sorted(ex.route("", {"a": 1, "b": 2})) == ["q1", "q2"]


def test_same_binding_twice_needs_two_unbinds():
    ex = HeadersExchange()
    args = {"x-match": "all", "a": 1}
    ex.bind("q", "", args)
    ex.bind("q", "", dict(args))
    ex.unbind("q", "", args)
    assert set(ex.route("", {"a": 1})) == {"q"}
    ex.unbind("q", "", args)
    assert set(ex.route("", {"a": 1})) == set()
    assert ex._bindings == {}


def test_unbind_matches_arguments_by_value_and_ignores_key_order():
    ex = HeadersExchange()
    ex.bind("q", "", {"x-match": "any", "a": {"n": [1, 2]}, "b": 2})
    ex.unbind("q", "", {"b": 2, "a": {"n": [1, 2]}, "x-match": "any"})
    assert ex._bindings == {}


def test_unbind_with_other_arguments_keeps_binding():
    ex = HeadersExchange()
    ex.bind("q", "", {"a": 1})
    ex.unbind("q", "", {"a": 2})
    ex.unbind("other", "", {"a": 1})
    assert set(ex.route("", {"a": 1})) == {"q"}


@pytest.mark.parametrize("arguments", [
    pytest.param({}, id="absent"),
    pytest.param({"x-match": "all"}, id="all"),
    pytest.param({"x-match": "any"}, id="any"),
    pytest.param({"x-match": "all-with-x"}, id="all-with-x"),
    pytest.param({"x-match": "any-with-x"}, id="any-with-x"),
    pytest.param({"x-match": b"any"}, id="bytes-any"),
])
def test_validate_binding_accepts(arguments):
    HeadersExchange().validate_binding("", arguments)


@pytest.mark.parametrize("arguments", [
    pytest.param({"x-match": "some"}, id="unknown-word"),
    pytest.param({"x-match": "ALL"}, id="upper-case"),
    pytest.param({"x-match": ""}, id="empty"),
    pytest.param({"x-match": "all "}, id="trailing-space"),
    pytest.param({"x-match": 1}, id="int"),
    pytest.param({"x-match": True}, id="bool"),
    pytest.param({"x-match": ["all"]}, id="array"),
    pytest.param({"x-match": None}, id="void"),
])
def test_validate_binding_rejects_bad_x_match_with_406(arguments):
    with pytest.raises(ChannelError) as err:
        HeadersExchange().validate_binding("", arguments)
    assert err.value.code == 406
    assert err.value.reply_text.startswith("PRECONDITION_FAILED - Invalid x-match field")


def test_byte_array_binding_value_matches_equal_byte_array_header():
    ex = HeadersExchange()
    ex.bind("q", "", {"blob": bytearray(b"\x00\xff")})
    assert set(ex.route("", {"blob": bytearray(b"\x00\xff")})) == {"q"}
    assert set(ex.route("", {"blob": "\x00\xff"})) == set()
