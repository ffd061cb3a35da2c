"""Topic exchange trie: RabbitMQ matching semantics, refcounted bindings, pruning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartbroker.exchanges.topic import TopicExchange, split_words

SETTINGS = settings(max_examples=200, deadline=None)

# (binding key, routing key, matches)
CASES = [
    # literal words
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.b", "a.b.c", False),
    ("a.b.c", "a.b.d", False),
    ("a", "A", False),
    ("stock.usd", "stock.usd", True),
    ("usd", "stock.usd", False),
    # * is exactly one word
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.b", "a.b", True),
    ("*.b", "b", False),
    ("a.*", "a", False),
    ("a.*", "a.b", True),
    ("a.*", "a.b.c", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("*.*", "a.b.c", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    # # is zero or more words, anywhere
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.z.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.b", "a.b.b", True),
    ("a.#.b", "b.a.b", False),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
    ("#.#", "", True),
    ("#.#", "a", True),
    ("#.#", "a.b.c", True),
    ("#.*", "", False),
    ("#.*", "a", True),
    ("#.*", "a.b", True),
    ("*.#", "a", True),
    ("*.#", "", False),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("*.#.*", "a.b.c.d", True),
    ("a.#.#.b", "a.b", True),
    ("a.#.*.#.b", "a.b", False),
    ("a.#.*.#.b", "a.x.b", True),
    # the empty routing key has zero words
    ("", "", True),
    ("#", "", True),
    ("*", "", False),
    ("a", "", False),
    ("", "a", False),
    # empty words are real words
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("a.b", "a..b", False),
    ("a.#.b", "a..b", True),
    (".", ".", True),
    ("*.*", ".", True),
    ("*", ".", False),
    ("#", ".", True),
    ("", ".", False),
    (".", "", False),
    ("a.", "a.", True),
    ("a.*", "a.", True),
    ("a", "a.", False),
    ("a.#", "a.", True),
    (".a", ".a", True),
    ("*.a", ".a", True),
    ("#.a", ".a", True),
    ("a..", "a..", True),
    ("a.#", "a..", True),
    # wildcard characters inside a word are literal
    ("a*", "ab", False),
    ("a*", "a*", True),
    ("a#", "a.b", False),
    ("#a", "#a", True),
    # a routing-key word "*" or "#" is just a word
    ("*", "#", True),
    ("a", "*", False),
]


def _case_id(case: tuple[str, str, bool]) -> str:
    binding, key, match = case
    return f"{binding!r}{'~' if match else '!~'}{key!r}"


@pytest.mark.parametrize(("binding", "routing_key", "expected"), CASES,
                         ids=[_case_id(c) for c in CASES])
def test_topic_match(binding, routing_key, expected):
    ex = TopicExchange()
    ex.bind("q", binding, {})
    assert ("q" in set(ex.route(routing_key, None))) is expected


@pytest.mark.parametrize(("key", "words"), [
    ("", []),
    ("a", ["a"]),
    ("a.b", ["a", "b"]),
    (".", ["", ""]),
    ("a..b", ["a", "", "b"]),
    ("a.", ["a", ""]),
])
def test_split_words(key, words):
    assert split_words(key) == words


def test_route_with_many_bindings_returns_exactly_the_matching_destinations():
    ex = TopicExchange()
    bindings = {"q1": "a.*", "q2": "a.#", "q3": "#", "q4": "b.*", "q5": "a.b", "q6": "*.*.*"}
    for dest, key in bindings.items():
        ex.bind(dest, key, {})
    assert set(ex.route("a.b", None)) == {"q1", "q2", "q3", "q5"}
    assert set(ex.route("a", None)) == {"q2", "q3"}
    assert set(ex.route("x.y.z", None)) == {"q3", "q6"}
    assert set(ex.route("", None)) == {"q3"}


def test_destination_bound_by_several_matching_keys_is_routed_once():
    ex = TopicExchange()
    for key in ("a.*", "a.#", "#", "*.b", "a.b"):
        ex.bind("q", key, {})
    ex.bind("other", "a.b", {})
    routed = list(ex.route("a.b", None))
    assert sorted(routed) == ["other", "q"]


def test_bound_twice_needs_two_unbinds():
    """The broker binds once per distinct (key, arguments); same key, other args = twice."""
    ex = TopicExchange()
    ex.bind("q", "a.*", {"x": 1})
    ex.bind("q", "a.*", {"x": 2})
    ex.unbind("q", "a.*", {"x": 1})
    assert set(ex.route("a.b", None)) == {"q"}
    ex.unbind("q", "a.*", {"x": 2})
    assert set(ex.route("a.b", None)) == set()
    assert ex._root.is_empty()


def test_unbind_one_destination_leaves_the_other():
    ex = TopicExchange()
    ex.bind("q1", "a.#", {})
    ex.bind("q2", "a.#", {})
    ex.unbind("q1", "a.#", {})
    assert set(ex.route("a.b", None)) == {"q2"}


@pytest.mark.parametrize("key", ["x.y", "a.b.c.d", "a.*", "#", "a", "", "a.#.b"])
def test_unbind_unknown_is_a_no_op(key):
    ex = TopicExchange()
    ex.bind("q", "a.b.c", {})
    ex.unbind("q", key, {})
    ex.unbind("other", "a.b.c", {})
    assert set(ex.route("a.b.c", None)) == {"q"}


KEYS_FOR_PRUNING = ["a.b.c", "a.b", "a.*.c", "a.#", "#", "*", "", "a..b", "#.#", "*.#.*", "a.b.c"]


def test_unbinding_everything_prunes_the_trie():
    ex = TopicExchange()
    for i, key in enumerate(KEYS_FOR_PRUNING):
        ex.bind(f"q{i % 3}", key, {})
    assert not ex._root.is_empty()
    for i, key in enumerate(KEYS_FOR_PRUNING):
        ex.unbind(f"q{i % 3}", key, {})
    assert ex._root.is_empty()
    assert ex._root.children == {}
    assert ex._root.star is None and ex._root.hash is None


def test_unbind_prunes_only_the_empty_branch():
    ex = TopicExchange()
    ex.bind("q", "a.b", {})
    ex.bind("q", "a.b.c.d", {})
    ex.unbind("q", "a.b.c.d", {})
    b = ex._root.children["a"].children["b"]
    assert b.children == {}
    assert set(ex.route("a.b", None)) == {"q"}
    assert set(ex.route("a.b.c.d", None)) == set()


def test_many_hashes_against_a_long_key_terminates():
    ex = TopicExchange()
    ex.bind("q", ".".join(["#"] * 30), {})
    ex.bind("r", ".".join(["#"] * 15 + ["z"]), {})
    key = ".".join(["w"] * 60)
    assert set(ex.route(key, None)) == {"q"}
    assert set(ex.route(key + ".z", None)) == {"q", "r"}


# --------------------------------------------------------------------------- reference model


def reference_match(binding: str, routing_key: str) -> bool:
    def match(pattern: list[str], words: list[str]) -> bool:
        if not pattern:
            return not words
        head, rest = pattern[0], pattern[1:]
        if head == "#":
            return any(match(rest, words[i:]) for i in range(len(words) + 1))
        if not words:
            return False
        return (head == "*" or head == words[0]) and match(rest, words[1:])

    return match(split_words(binding), split_words(routing_key))


def _keys(words: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(words), max_size=6).map(".".join)


binding_keys = _keys(["", "a", "b", "*", "#"])
routing_keys = _keys(["", "a", "b", "c", "*", "#"])


@pytest.mark.parametrize(("binding", "routing_key", "expected"), CASES,
                         ids=[_case_id(c) for c in CASES])
def test_reference_matcher_agrees_with_table(binding, routing_key, expected):
    """The model the property test trusts is itself checked against the table."""
    assert reference_match(binding, routing_key) is expected


@SETTINGS
@given(bindings=st.lists(st.tuples(st.sampled_from(["q1", "q2", "q3"]), binding_keys),
                         max_size=8),
       keys=st.lists(routing_keys, min_size=1, max_size=5))
def test_route_matches_reference(bindings, keys):
    assert_routes_as(reference_match, bindings, keys)


def assert_routes_as(matcher, bindings, keys) -> None:
    """A TopicExchange with ``bindings`` routes each key to what ``matcher`` says."""
    ex = TopicExchange()
    for dest, binding in bindings:
        ex.bind(dest, binding, {})
    for key in keys:
        expected = {dest for dest, binding in bindings if matcher(binding, key)}
        assert set(ex.route(key, None)) == expected, key


@SETTINGS
@given(bindings=st.lists(st.tuples(st.sampled_from(["q1", "q2", "q3"]), binding_keys),
                         max_size=8),
       data=st.data())
def test_route_matches_reference_after_unbinds(bindings, data):
    ex = TopicExchange()
    for dest, binding in bindings:
        ex.bind(dest, binding, {})
    removed = data.draw(st.sets(st.integers(0, max(len(bindings) - 1, 0)))) if bindings else set()
    for i in removed:
        ex.unbind(*bindings[i], {})
    keep = [b for i, b in enumerate(bindings) if i not in removed]
    for key in data.draw(st.lists(routing_keys, min_size=1, max_size=5)):
        expected = {dest for dest, binding in keep if reference_match(binding, key)}
        assert set(ex.route(key, None)) == expected, key
    for dest, binding in keep:
        ex.unbind(dest, binding, {})
    assert ex._root.is_empty()


# --------------------------------------------------------------------------- long keys (issue 12 B)


def dp_match(binding: str, routing_key: str) -> bool:
    """A second reference without recursion (dynamic programming over prefixes), usable on
    keys of hundreds of words where ``reference_match`` would take exponential time."""
    pattern, words = split_words(binding), split_words(routing_key)
    # ok[j]: the pattern prefix seen so far matches the first j words
    ok = [True] + [False] * len(words)
    for head in pattern:
        if head == "#":
            for j in range(1, len(words) + 1):
                ok[j] = ok[j] or ok[j - 1]
        else:
            ok = [False] + [ok[j - 1] and (head == "*" or head == words[j - 1])
                            for j in range(1, len(words) + 1)]
    return ok[len(words)]


@pytest.mark.parametrize(("binding", "routing_key", "expected"), CASES,
                         ids=[_case_id(c) for c in CASES])
def test_dp_reference_agrees_with_table(binding, routing_key, expected):
    assert dp_match(binding, routing_key) is expected


def _low_recursion_limit():
    """Any recursion per word or per binding-key word would now raise RecursionError."""
    import sys

    class Limit:
        def __enter__(self):
            self.old = sys.getrecursionlimit()
            sys.setrecursionlimit(120)

        def __exit__(self, *exc):
            sys.setrecursionlimit(self.old)

    return Limit()


WORDS_255 = ".".join(f"w{i % 7}" for i in range(255))


@pytest.mark.parametrize(("binding", "routing_key"), [
    (WORDS_255, WORDS_255),
    (".".join(["*"] * 255), WORDS_255),
    (".".join(["#"] * 127), WORDS_255),
    (".".join(["#", "*"] * 127), WORDS_255),
    (".".join(["#", "w0"] * 100), WORDS_255),
    (".".join(["#"] * 127), ".".join(["#"] * 255)),
    ("#." + WORDS_255, WORDS_255),
    (WORDS_255 + ".#", WORDS_255 + ".x"),
    ("*." + WORDS_255, WORDS_255),
])
def test_long_keys_route_without_recursion(binding, routing_key):
    """255-word keys (a 255-byte routing key has at most 128 words, but HTTP once let longer
    binding keys in) and keys of many ``#``: bind, route and unbind with a tiny stack."""
    ex = TopicExchange()
    with _low_recursion_limit():
        ex.bind("q", binding, {})
        routed = "q" in set(ex.route(routing_key, None))
        ex.unbind("q", binding, {})
    assert routed is dp_match(binding, routing_key)
    assert ex._root.is_empty()


def test_many_hash_bindings_against_long_keys_stay_polynomial():
    """Every prefix of a 200-word run of '#': the live set stays small (no blow-up)."""
    ex = TopicExchange()
    for n in range(1, 200, 13):
        ex.bind(f"h{n}", ".".join(["#"] * n + ["end"]), {})
    key = ".".join(["x"] * 250 + ["end"])
    with _low_recursion_limit():
        assert set(ex.route(key, None)) == {f"h{n}" for n in range(1, 200, 13)}
        assert set(ex.route(key + ".x", None)) == set()


long_binding_keys = st.lists(st.sampled_from(["a", "b", "*", "#", ""]), max_size=40).map(".".join)
long_routing_keys = st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=60).map(".".join)


@SETTINGS
@given(bindings=st.lists(st.tuples(st.sampled_from(["q1", "q2", "q3"]), long_binding_keys),
                         max_size=6),
       keys=st.lists(long_routing_keys, min_size=1, max_size=4))
def test_route_matches_dp_reference_on_long_keys(bindings, keys):
    assert_routes_as(dp_match, bindings, keys)


@SETTINGS
@given(binding=binding_keys, key=routing_keys)
def test_dp_reference_agrees_with_recursive_reference(binding, key):
    assert dp_match(binding, key) is reference_match(binding, key)
