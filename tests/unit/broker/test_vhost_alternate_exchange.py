"""VirtualHost routing with alternate exchanges: used when nothing matches, given as bytes,
chains and cycles, missing ones, and per-exchange alternates downstream."""

from __future__ import annotations

from vhost_helpers import queue, route

# --------------------------------------------------------------------------- alternate exchange


def test_alternate_exchange_used_when_nothing_matches(vh):
    vh.declare_exchange("ae", "fanout")
    vh.bind("ae", queue(vh, "unrouted"), "", {})
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    vh.bind("main", queue(vh, "q"), "k", {})
    assert route(vh, "main", "k") == {"q"}
    assert route(vh, "main", "other") == {"unrouted"}


def test_alternate_exchange_given_as_bytes(vh):
    vh.declare_exchange("ae", "fanout")
    vh.bind("ae", queue(vh, "unrouted"), "", {})
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": b"ae"})
    assert route(vh, "main", "x") == {"unrouted"}


def test_alternate_exchange_chain(vh):
    vh.declare_exchange("ae2", "fanout")
    vh.bind("ae2", queue(vh, "last"), "", {})
    vh.declare_exchange("ae1", "direct", arguments={"alternate-exchange": "ae2"})
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae1"})
    assert route(vh, "main", "x") == {"last"}


def test_alternate_exchange_cycle_terminates(vh):
    vh.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    vh.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    assert route(vh, "a", "x") == set()


def test_missing_alternate_exchange_drops(vh):
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "nowhere"})
    assert route(vh, "main", "x") == set()


def test_alternate_exchange_not_used_when_routed_to_an_exchange(vh):
    """As RabbitMQ: the AE applies when the exchange itself had no destination at all."""
    vh.declare_exchange("ae", "fanout")
    vh.bind("ae", queue(vh, "unrouted"), "", {})
    vh.declare_exchange("empty", "direct")
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    vh.bind("main", vh.exchange("empty"), "k", {})
    assert route(vh, "main", "k") == set()


def test_downstream_exchange_uses_its_own_alternate(vh):
    vh.declare_exchange("ae", "fanout")
    vh.bind("ae", queue(vh, "unrouted"), "", {})
    vh.declare_exchange("inner", "direct", arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("main", "fanout")
    vh.bind("main", vh.exchange("inner"), "", {})
    assert route(vh, "main", "k") == {"unrouted"}
