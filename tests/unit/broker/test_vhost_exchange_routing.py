"""VirtualHost routing loop: the default exchange, each exchange type, binding identity,
unbinding, and exchange-to-exchange chains, cycles and diamonds."""

from __future__ import annotations

import pytest
from vhost_helpers import code_of, queue, route

from smartbroker.message import Message

# --------------------------------------------------------------------------- default exchange


def test_default_exchange_routes_by_queue_name(vh):
    queue(vh, "q1")
    queue(vh, "q2")
    assert route(vh, "", "q1") == {"q1"}
    assert route(vh, "", "q2") == {"q2"}
    assert route(vh, "", "nope") == set()


def test_default_exchange_forgets_deleted_queue(vh):
    queue(vh, "q1")
    vh.delete_queue("q1")
    assert route(vh, "", "q1") == set()


def test_cc_routing_keys_are_unioned_once(vh):
    queue(vh, "q1")
    queue(vh, "q2")
    assert route(vh, "", "q1", cc=["q2", "q1", "missing"]) == {"q1", "q2"}


@pytest.mark.parametrize(("operation", "args"), [
    pytest.param("declare_exchange", ("", "direct"), id="declare"),
    pytest.param("delete_exchange", ("",), id="delete"),
    pytest.param("bind", ("", None, "k", {}), id="bind"),
    pytest.param("unbind", ("", None, "k", {}), id="unbind"),
])
def test_default_exchange_is_off_limits_403(vh, operation, args):
    assert code_of(getattr(vh, operation), *args) == 403


# --------------------------------------------------------------------------- exchange types through the vhost


@pytest.mark.parametrize(("type_name", "binding_key", "arguments", "routing_key", "headers",
                          "expected"), [
    pytest.param("direct", "k", {}, "k", None, True, id="direct-hit"),
    pytest.param("direct", "k", {}, "K", None, False, id="direct-miss"),
    pytest.param("fanout", "ignored", {}, "anything", None, True, id="fanout"),
    pytest.param("topic", "a.*", {}, "a.b", None, True, id="topic-hit"),
    pytest.param("topic", "a.*", {}, "a", None, False, id="topic-miss"),
    pytest.param("headers", "", {"x-match": "any", "h": 1}, "", {"h": 1}, True,
                 id="headers-hit"),
    pytest.param("headers", "", {"x-match": "any", "h": 1}, "", {"h": 2}, False,
                 id="headers-miss"),
    pytest.param("headers", "", {"h": 1}, "", None, False, id="headers-no-headers"),
])
def test_route_by_exchange_type(vh, type_name, binding_key, arguments, routing_key, headers,
                                expected):
    vh.declare_exchange("ex", type_name)
    vh.bind("ex", queue(vh, "q"), binding_key, arguments)
    assert route(vh, "ex", routing_key, headers) == ({"q"} if expected else set())


def test_binding_twice_is_one_binding(vh):
    vh.declare_exchange("ex", "direct")
    q = queue(vh, "q")
    vh.bind("ex", q, "k", {})
    vh.bind("ex", q, "k", {})
    assert len(vh.exchange("ex").bindings) == 1
    vh.unbind("ex", q, "k", {})
    assert route(vh, "ex", "k") == set()
    assert q.bindings == set()


def test_bindings_differing_in_arguments_are_distinct(vh):
    vh.declare_exchange("ex", "topic")
    q = queue(vh, "q")
    vh.bind("ex", q, "a.*", {"v": 1})
    vh.bind("ex", q, "a.*", {"v": 2})
    vh.unbind("ex", q, "a.*", {"v": 1})
    assert route(vh, "ex", "a.b") == {"q"}
    vh.unbind("ex", q, "a.*", {"v": 2})
    assert route(vh, "ex", "a.b") == set()


def test_unbind_of_missing_things_succeeds(vh):
    vh.declare_exchange("ex", "direct")
    q = queue(vh, "q")
    vh.unbind("ex", q, "k", {})
    vh.unbind("missing", q, "k", {})
    vh.unbind("ex", None, "k", {})


# --------------------------------------------------------------------------- exchange-to-exchange


def test_exchange_to_exchange_chain(vh):
    vh.declare_exchange("e1", "topic")
    vh.declare_exchange("e2", "direct")
    vh.declare_exchange("e3", "fanout")
    vh.bind("e1", vh.exchange("e2"), "a.#", {})
    vh.bind("e2", vh.exchange("e3"), "a.b", {})
    vh.bind("e2", queue(vh, "q2"), "a.b", {})
    vh.bind("e3", queue(vh, "q3"), "", {})
    assert route(vh, "e1", "a.b") == {"q2", "q3"}
    assert route(vh, "e1", "a.c") == set()
    assert route(vh, "e1", "b.b") == set()


def test_exchange_cycle_terminates_and_delivers_once(vh):
    e1 = vh.declare_exchange("e1", "fanout")
    e2 = vh.declare_exchange("e2", "fanout")
    vh.bind("e1", e2, "", {})
    vh.bind("e2", e1, "", {})
    vh.bind("e2", queue(vh, "q"), "", {})
    vh.bind("e1", queue(vh, "p"), "", {})
    message = Message.build("e1", "k", b"x")
    queues = vh.route(e1, message, ["k"])
    assert sorted(q.name for q in queues) == ["p", "q"]
    assert route(vh, "e2", "k") == {"p", "q"}


def test_self_bound_exchange_terminates(vh):
    e = vh.declare_exchange("e", "fanout")
    vh.bind("e", e, "", {})
    vh.bind("e", queue(vh, "q"), "", {})
    assert route(vh, "e", "k") == {"q"}


def test_diamond_delivers_once(vh):
    for name in ("top", "left", "right"):
        vh.declare_exchange(name, "fanout")
    vh.bind("top", vh.exchange("left"), "", {})
    vh.bind("top", vh.exchange("right"), "", {})
    q = queue(vh, "q")
    vh.bind("left", q, "", {})
    vh.bind("right", q, "", {})
    message = Message.build("top", "", b"x")
    assert vh.route(vh.exchange("top"), message, [""]) == {q}


def test_headers_exchange_downstream_of_topic_sees_headers(vh):
    vh.declare_exchange("t", "topic")
    vh.declare_exchange("h", "headers")
    vh.bind("t", vh.exchange("h"), "#", {})
    vh.bind("h", queue(vh, "q"), "", {"x-match": "all", "k": "v"})
    assert route(vh, "t", "a", {"k": "v"}) == {"q"}
    assert route(vh, "t", "a", {"k": "w"}) == set()
