"""RabbitMQ's limits and parsing for TTLs (issue 12 D), table-driven, exact texts as RabbitMQ
3.10.8 sends them: ``x-message-ttl`` and ``x-expires`` above ten years are 406
``value_too_large``; a per-message ``expiration`` goes through Erlang's string:to_integer
(sign, leading zeros, nothing left over) and the same limit, and the error is printed with
Erlang's ~p (which wraps a long term onto a second line)."""

from __future__ import annotations

import uuid

import pika
import pika.exceptions
import pytest

from .helpers import connect

MAX = 315_360_000_000  # ms, ten years


def _queue_error(url: str, arguments: dict) -> tuple[int, str] | None:
    name = f"test.ttl-limit.{uuid.uuid4().hex[:10]}"
    conn = connect(url)
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(name, exclusive=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            return exc.reply_code, exc.reply_text.replace(name, "Q")
        return None
    finally:
        if conn.is_open:
            conn.close()


@pytest.mark.parametrize(("arg", "value", "error"), [
    ("x-message-ttl", MAX, None),
    ("x-message-ttl", 4_294_967_296, None),
    ("x-message-ttl", MAX + 1, f"{{value_too_large,{MAX + 1}}}"),
    ("x-message-ttl", 2**63 - 1, f"{{value_too_large,{2**63 - 1}}}"),
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-expires", MAX, None),
    ("x-expires", MAX + 1, f"{{value_too_large,{MAX + 1}}}"),
    ("x-expires", 2**63 - 1, f"{{value_too_large,{2**63 - 1}}}"),
    ("x-expires", 0, "{value_zero,0}"),
])
def test_queue_ttl_limits(broker_url: str, arg: str, value: int, error: str | None) -> None:
    got = _queue_error(broker_url, {arg: value})
    if error is None:
        assert got is None
    else:
        assert got == (406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue 'Q' in "
                            f"vhost '/': {error}")


def _pad(column: int) -> str:
    return "\n" + " " * column


# (expiration, None if accepted else RabbitMQ's text after "invalid expiration '<value>': ")
EXPIRATIONS = [
    ("0", None), ("5", None), ("+5", None), ("-0", None), ("-00", None), ("007", None),
    ("00", None), ("4294967296", None), (str(MAX), None), ("0000" + str(MAX), None),
    ("", "no_integer"), ("x", "no_integer"), (" 5", "no_integer"), ("\t5", "no_integer"),
    ("+", "no_integer"), ("-", "no_integer"), ("+-5", "no_integer"), ("--5", "no_integer"),
    ("\u0663", "no_integer"),  # an Arabic-Indic digit is no ASCII digit
    ("-1", "{value_negative,-1}"),
    ("-999999999999999999", "{value_negative,-999999999999999999}"),
    ("-9999999999999999999", "{value_negative," + _pad(44) + "-9999999999999999999}"),
    (str(MAX + 1), f"{{value_too_large,{MAX + 1}}}"),
    ("0000" + str(MAX + 1), f"{{value_too_large,{MAX + 1}}}"),
    ("9999999999999999999", "{value_too_large," + _pad(43) + "9999999999999999999}"),
    ("09999999999999999999", "{value_too_large," + _pad(44) + "9999999999999999999}"),
    ("99999999999999999999999", "{value_too_large," + _pad(47) + "99999999999999999999999}"),
    ("5 ", '{leftover_string," "}'), ("5x", '{leftover_string,"x"}'),
    ("1.5", '{leftover_string,".5"}'), ("1e3", '{leftover_string,"e3"}'),
    ("0x10", '{leftover_string,"x10"}'), ("-5x", '{leftover_string,"x"}'),
    ("+5x", '{leftover_string,"x"}'), ('5"', '{leftover_string,"\\""}'),
    ("5\\", '{leftover_string,"\\\\"}'), ("5\n", '{leftover_string,"\\n"}'),
    ("5 x\ty", '{leftover_string," x\\ty"}'), ("5\x01", "{leftover_string,[1]}"),
    ("5\x7f", "{leftover_string,[127]}"), ("5\u00e9", '{leftover_string,"\u00e9"}'),
    ("5\x82", "{leftover_string,[194,130]}"),
    ("5" + "y" * 40, "{leftover_string," + _pad(65) + '"' + "y" * 40 + '"}'),
]


@pytest.mark.parametrize(("expiration", "error"), EXPIRATIONS, ids=[repr(e) for e, _ in EXPIRATIONS])
def test_message_expiration_parsing(broker_url: str, expiration: str, error: str | None) -> None:
    conn = connect(broker_url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        queue = ch.queue_declare("", exclusive=True).method.queue
        props = pika.BasicProperties(expiration=expiration)
        if error is None:
            ch.basic_publish("", queue, b"m", props)  # confirmed, the channel stays open
            ch.queue_declare(queue, passive=True)
            return
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_publish("", queue, b"m", props)
        assert (info.value.reply_code, info.value.reply_text) == (
            406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {error}")
    finally:
        if conn.is_open:
            conn.close()


def test_long_expiration_error_is_cut_to_255_bytes_as_rabbitmq(broker_url: str) -> None:
    conn = connect(broker_url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        queue = ch.queue_declare("", exclusive=True).method.queue
        expiration = "5" + "x" * 100
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_publish("", queue, b"m", pika.BasicProperties(expiration=expiration))
        text = info.value.reply_text
        assert len(text) == 255 and text.endswith("...")
        assert text.startswith(f"PRECONDITION_FAILED - invalid expiration '{expiration}': "
                               "{leftover_string,\n      ")
    finally:
        if conn.is_open:
            conn.close()
