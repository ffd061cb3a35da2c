"""VirtualHost declare/bind rules and RabbitMQ's reply codes: redeclare and passive declare,
generated names, exclusive owners, channel/connection error codes and reply texts."""

from __future__ import annotations

import pytest
from vhost_helpers import code_of, queue, route

from smartbroker.errors import AMQPError, ChannelError
from smartbroker.message import Message

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
