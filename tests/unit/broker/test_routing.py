"""VirtualHost: declare/bind rules, the routing loop (e2e, cycles, alternate exchanges),
cleanup on delete, and RabbitMQ's reply codes."""

from __future__ import annotations

import pytest

from smartbroker.broker.exchange import Exchange
from smartbroker.broker.vhost import VirtualHost
from smartbroker.errors import AMQPError, ChannelError
from smartbroker.message import Message
from smartbroker.queues.classic import ClassicQueue


@pytest.fixture
def vh() -> VirtualHost:
    return VirtualHost("/")


def queue(vh: VirtualHost, name: str, **kwargs) -> ClassicQueue:
    q, created = vh.declare_queue(name, **kwargs)
    assert created
    return q


def route(vh: VirtualHost, exchange: str, routing_key: str = "",
          headers: dict | None = None, cc: list[str] | None = None) -> set[str]:
    from pamqp import commands

    props = commands.Basic.Properties(headers=headers) if headers else None
    message = Message.build(exchange, routing_key, b"x", props)
    queues = vh.route(vh.exchange(exchange), message, [routing_key, *(cc or [])])
    return {q.name for q in queues}


def code_of(call, *args, **kwargs) -> int:
    with pytest.raises(AMQPError) as err:
        call(*args, **kwargs)
    return err.value.code


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


# --------------------------------------------------------------------------- auto-delete and cleanup


def test_auto_delete_exchange_removed_with_its_last_binding(vh):
    vh.declare_exchange("ad", "direct", auto_delete=True)
    q1, q2 = queue(vh, "q1"), queue(vh, "q2")
    vh.bind("ad", q1, "k", {})
    vh.bind("ad", q2, "k", {})
    vh.unbind("ad", q1, "k", {})
    assert "ad" in vh.exchanges
    vh.unbind("ad", q2, "k", {})
    assert "ad" not in vh.exchanges
    assert q1.bindings == set() and q2.bindings == set()


def test_auto_delete_exchange_without_bindings_survives_declare(vh):
    vh.declare_exchange("ad", "direct", auto_delete=True)
    assert "ad" in vh.exchanges


def test_auto_delete_exchange_removed_when_its_queue_is_deleted(vh):
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.bind("ad", queue(vh, "q"), "", {})
    assert vh.delete_queue("q") == 0
    assert "ad" not in vh.exchanges


def test_auto_delete_cascades_through_exchange_bindings(vh):
    up = vh.declare_exchange("up", "fanout", auto_delete=True)
    vh.declare_exchange("down", "fanout")
    vh.bind("up", vh.exchange("down"), "", {})
    vh.delete_exchange("down")
    assert "up" not in vh.exchanges
    assert up.bindings == {}


def test_deleted_queue_bindings_are_removed(vh):
    vh.declare_exchange("t", "topic")
    vh.declare_exchange("f", "fanout")
    q, other = queue(vh, "q"), queue(vh, "other")
    vh.bind("t", q, "a.#", {})
    vh.bind("f", q, "", {})
    vh.bind("f", other, "", {})
    vh.delete_queue("q")
    assert route(vh, "t", "a.b") == set()
    assert route(vh, "f", "") == {"other"}
    assert all(b.destination is not q for ex in vh.exchanges.values()
               for b in ex.bindings.values())
    assert vh.exchange("t").router._root.is_empty()


def test_delete_queue_reports_ready_count_and_runs_hooks(vh):
    deleted = []
    vh.on_queue_deleted.append(deleted.append)
    q = queue(vh, "q")
    q.publish(Message.build("", "q", b"x"))
    assert vh.delete_queue("q") == 1
    assert deleted == [q]
    assert "q" not in vh.queues
    assert vh.delete_queue("q") == 0


def test_deleted_exchange_bindings_are_removed_both_ways(vh):
    vh.declare_exchange("src", "fanout")
    mid = vh.declare_exchange("mid", "fanout")
    q = queue(vh, "q")
    vh.bind("src", mid, "", {})
    vh.bind("mid", q, "", {})
    vh.delete_exchange("mid")
    assert route(vh, "src", "") == set()
    assert vh.exchange("src").bindings == {}
    assert q.bindings == set()
    assert isinstance(vh.exchanges.get("src"), Exchange)


def test_auto_delete_queue_dropped_when_last_consumer_leaves(vh):
    class Consumer:
        tag, no_ack, exclusive, priority = "c", False, False, 0

        def can_take(self):
            return True

        def deliver(self, queue, entry):
            pass

        def cancelled_by_broker(self):
            pass

    q = queue(vh, "ad", auto_delete=True)
    vh.declare_exchange("f", "fanout")
    vh.bind("f", q, "", {})
    c = Consumer()
    q.add_consumer(c)
    q.remove_consumer(c)
    assert "ad" not in vh.queues
    assert route(vh, "f", "") == set()
    assert route(vh, "", "ad") == set()


# --------------------------------------------------------------------------- declare rules and codes


def test_redeclare_returns_existing(vh):
    q = queue(vh, "q", durable=True, arguments={"x-max-length": 5})
    again, created = vh.declare_queue("q", durable=True, arguments={"x-max-length": 5})
    assert again is q and created is False
    ex = vh.declare_exchange("ex", "topic", durable=True)
    assert vh.declare_exchange("ex", "topic", durable=True) is ex


def test_passive_declare_returns_existing(vh):
    q = queue(vh, "q", durable=True)
    assert vh.declare_queue("q", passive=True) == (q, False)
    ex = vh.declare_exchange("ex", "topic")
    assert vh.declare_exchange("ex", "direct", passive=True) is ex  # type ignored


def test_empty_queue_name_is_generated(vh):
    q, created = vh.declare_queue("")
    assert created and q.name.startswith("amq.gen-") and len(q.name) > len("amq.gen-")
    assert vh.declare_queue("")[0] is not q


def test_predeclared_exchanges_exist_and_redeclare_equivalently(vh):
    for name, type_name in [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                            ("amq.topic", "topic"), ("amq.headers", "headers"),
                            ("amq.match", "headers")]:
        assert vh.declare_exchange(name, type_name, durable=True) is vh.exchange(name)


def test_exclusive_owner_may_use_its_queue(vh):
    owner = object()
    q, _ = vh.declare_queue("ex-q", exclusive=True, owner=owner)
    assert vh.declare_queue("ex-q", exclusive=True, owner=owner) == (q, False)
    assert vh.declare_queue("ex-q", passive=True, owner=owner) == (q, False)
    assert vh.purge_queue("ex-q", owner=owner) == 0
    assert vh.delete_queue("ex-q", owner=owner) == 0
    assert "ex-q" not in vh.queues


ERROR_CASES = [
    # (id, setup, call, expected code)
    ("passive-missing-exchange", lambda vh: None,
     lambda vh: vh.declare_exchange("nope", "direct", passive=True), 404),
    ("passive-missing-queue", lambda vh: None,
     lambda vh: vh.declare_queue("nope", passive=True), 404),
    ("passive-missing-amq-queue", lambda vh: None,
     lambda vh: vh.declare_queue("amq.nope", passive=True), 404),
    ("bind-missing-source", lambda vh: vh.declare_queue("q"),
     lambda vh: vh.bind("nope", vh.queues["q"], "k", {}), 404),
    ("purge-missing-queue", lambda vh: None, lambda vh: vh.purge_queue("nope"), 404),
    ("declare-amq-exchange", lambda vh: None,
     lambda vh: vh.declare_exchange("amq.custom", "direct"), 403),
    ("declare-amq-queue", lambda vh: None, lambda vh: vh.declare_queue("amq.custom"), 403),
    ("delete-amq-direct", lambda vh: None, lambda vh: vh.delete_exchange("amq.direct"), 403),
    ("redeclare-exchange-type", lambda vh: vh.declare_exchange("e", "direct"),
     lambda vh: vh.declare_exchange("e", "fanout"), 406),
    ("redeclare-exchange-durable", lambda vh: vh.declare_exchange("e", "direct"),
     lambda vh: vh.declare_exchange("e", "direct", durable=True), 406),
    ("redeclare-exchange-auto-delete", lambda vh: vh.declare_exchange("e", "direct"),
     lambda vh: vh.declare_exchange("e", "direct", auto_delete=True), 406),
    ("redeclare-exchange-internal", lambda vh: vh.declare_exchange("e", "direct"),
     lambda vh: vh.declare_exchange("e", "direct", internal=True), 406),
    ("redeclare-exchange-alternate",
     lambda vh: vh.declare_exchange("e", "direct", arguments={"alternate-exchange": "a"}),
     lambda vh: vh.declare_exchange("e", "direct", arguments={"alternate-exchange": "b"}), 406),
    ("redeclare-amq-direct-as-fanout", lambda vh: None,
     lambda vh: vh.declare_exchange("amq.direct", "fanout", durable=True), 406),
    ("redeclare-queue-durable", lambda vh: vh.declare_queue("q"),
     lambda vh: vh.declare_queue("q", durable=True), 406),
    ("redeclare-queue-auto-delete", lambda vh: vh.declare_queue("q"),
     lambda vh: vh.declare_queue("q", auto_delete=True), 406),
    ("redeclare-queue-max-length", lambda vh: vh.declare_queue("q", arguments={"x-max-length": 1}),
     lambda vh: vh.declare_queue("q", arguments={"x-max-length": 2}), 406),
    ("redeclare-queue-arg-added", lambda vh: vh.declare_queue("q"),
     lambda vh: vh.declare_queue("q", arguments={"x-message-ttl": 100}), 406),
    ("delete-queue-if-empty", lambda vh: vh.declare_queue("q")[0].publish(
        Message.build("", "q", b"x")),
     lambda vh: vh.delete_queue("q", if_empty=True), 406),
    ("delete-exchange-if-unused",
     lambda vh: (vh.declare_exchange("e", "fanout"), vh.bind("e", vh.declare_queue("q")[0], "", {})),
     lambda vh: vh.delete_exchange("e", if_unused=True), 406),
    ("bind-headers-bad-x-match",
     lambda vh: (vh.declare_exchange("h", "headers"), vh.declare_queue("q")),
     lambda vh: vh.bind("h", vh.queues["q"], "", {"x-match": "most"}), 406),
    ("exclusive-queue-other-owner-declare",
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"),
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-b"), 405),
    ("exclusive-queue-other-owner-passive",
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"),
     lambda vh: vh.declare_queue("x", passive=True, owner="conn-b"), 405),
    ("exclusive-queue-other-owner-delete",
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"),
     lambda vh: vh.delete_queue("x", owner="conn-b"), 405),
    ("exclusive-queue-other-owner-purge",
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"),
     lambda vh: vh.purge_queue("x", owner="conn-b"), 405),
    ("exclusive-queue-redeclared-non-exclusive-by-owner",
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"),
     lambda vh: vh.declare_queue("x", exclusive=False, owner="conn-a"), 405),
    ("queue-redeclared-exclusive",
     lambda vh: vh.declare_queue("x"),
     lambda vh: vh.declare_queue("x", exclusive=True, owner="conn-a"), 405),
]


@pytest.mark.parametrize(("setup", "call", "code"),
                         [pytest.param(s, c, code, id=i) for i, s, c, code in ERROR_CASES])
def test_channel_error_codes(vh, setup, call, code):
    setup(vh)
    with pytest.raises(ChannelError) as err:
        call(vh)
    assert err.value.code == code


def test_unknown_exchange_type_is_a_connection_error_503(vh):
    with pytest.raises(AMQPError) as err:
        vh.declare_exchange("e", "no-such-type")
    assert err.value.code == 503
    assert not isinstance(err.value, ChannelError)


def test_failed_redeclare_leaves_original_untouched(vh):
    ex = vh.declare_exchange("e", "direct", durable=True)
    q = queue(vh, "q", arguments={"x-max-length": 1})
    code_of(vh.declare_exchange, "e", "fanout", durable=True)
    code_of(vh.declare_queue, "q", arguments={"x-max-length": 2})
    assert vh.exchange("e") is ex and ex.type_name == "direct"
    assert vh.queues["q"] is q and q.arguments == {"x-max-length": 1}


def test_error_reply_text_names_the_object(vh):
    with pytest.raises(ChannelError) as err:
        vh.declare_queue("nope", passive=True)
    assert err.value.reply_text == "NOT_FOUND - no queue 'nope' in vhost '/'"


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("type_name", ["direct", "topic", "fanout"])
def test_bind_with_byte_array_argument(vh, type_name):
    vh.declare_exchange("e", type_name)
    q = queue(vh, "q")
    vh.bind("e", q, "k", {"blob": bytearray(b"\x00\x01")})
    assert route(vh, "e", "k") == {"q"}
    vh.unbind("e", q, "k", {"blob": bytearray(b"\x00\x01")})
    assert route(vh, "e", "k") == set()


@pytest.mark.parametrize("new_value", [
    pytest.param(True, id="bool"),
    pytest.param(5.0, id="float"),
])
def test_redeclare_queue_argument_of_other_type_class_is_406(vh, new_value):
    queue(vh, "q", arguments={"x-max-length": 1 if new_value is True else 5})
    with pytest.raises(ChannelError) as err:
        vh.declare_queue("q", arguments={"x-max-length": new_value})
    assert err.value.code == 406
