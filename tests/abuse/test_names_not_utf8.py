"""Short strings that are not UTF-8 in method frames, answered as RabbitMQ 3.10.8 answers
them (checked byte for byte; these tests pass against it with SMARTBROKER_TEST_URL):
declare, bind, consume and connection.open refuse the frame (501 FRAME_ERROR "Malformed
UTF-8 in shortstr"), while basic.publish takes the routing key as the bytes it is."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from tests.abuse.bytewire import RawClient, longstr, method, shortstr

MALFORMED = b"FRAME_ERROR - Malformed UTF-8 in shortstr"
NO_ARGS = b"\x00\x00\x00\x00"


def opened(broker: Any) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.open()
    return client


def close_reason(client: RawClient) -> tuple[int, bytes, tuple[int, int]]:
    """(reply code, reply text, offending class/method) of the connection.close received."""
    frame = client.expect(10, 50)
    code = struct.unpack("!H", frame.payload[4:6])[0]
    size = frame.payload[6]
    text = frame.payload[7:7 + size]
    ids = struct.unpack("!HH", frame.payload[7 + size:11 + size])
    return code, text, ids


@pytest.mark.parametrize("payload", [
    pytest.param(method(50, 10, b"\x00\x00" + shortstr(b"q\xff\xfe") + b"\x00" + NO_ARGS),
                 id="queue.declare"),
    pytest.param(method(40, 10, b"\x00\x00" + shortstr(b"x\xff") + shortstr("direct") + b"\x00"
                        + NO_ARGS), id="exchange.declare"),
    pytest.param(method(60, 20, b"\x00\x00" + shortstr("q") + shortstr(b"tag\xff") + b"\x00"
                        + NO_ARGS), id="basic.consume"),
])
def test_channel_method_with_malformed_short_string_is_a_frame_error(broker: Any, payload: bytes) -> None:
    client = opened(broker)
    try:
        client.send_method(1, payload)
        assert close_reason(client) == (501, MALFORMED, (0, 0))
    finally:
        client.close()


def test_connection_open_with_malformed_vhost_names_the_method(broker: Any) -> None:
    client = RawClient(broker.host, broker.port)
    try:
        client.start_ok()
        tune = client.expect(10, 30)
        client.send_method(0, method(10, 31, tune.payload[4:12]))
        client.send_method(0, method(10, 40, shortstr(b"/\xff") + shortstr("") + b"\x00"))
        assert close_reason(client) == (501, MALFORMED, (10, 40))
    finally:
        client.close()


def test_publish_routes_a_routing_key_that_is_not_utf8(broker: Any, uid: str) -> None:
    queue = f"raw.rk.{uid}"
    client = opened(broker)
    try:
        client.queue_declare(queue)
        client.queue_bind(queue, "amq.topic", "#")
        client.publish("amq.topic", "", b"\x00\x00", b"")  # warm-up: routes normally
        client.send_method(1, method(60, 40, b"\x00\x00" + shortstr("amq.topic")
                                     + shortstr(b"a.\xff.b") + b"\x00"))
        client.send_frame(2, 1, struct.pack("!HHQ", 60, 0, 1) + b"\x00\x00")
        client.send_frame(3, 1, b"x")
        deadline = time.monotonic() + 10
        got = []
        while len(got) < 2 and time.monotonic() < deadline:
            client.send_method(1, method(60, 70, b"\x00\x00" + shortstr(queue) + b"\x01"))
            frame = client.read_frame()
            if frame.method_id == (60, 71):
                got.append(frame.payload[12:])  # exchange and routing key, as delivered
                header = client.read_frame()
                if struct.unpack("!Q", header.payload[4:12])[0]:
                    client.read_frame()
        assert got[1].endswith(shortstr("amq.topic") + shortstr(b"a.\xff.b") + b"\x00\x00\x00\x00")
        client.queue_delete(queue)
    finally:
        client.close()


def publish_raw(client: RawClient, exchange: str, routing_key: bytes, properties: bytes,
                body: bytes) -> None:
    client.send_method(1, method(60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(routing_key)
                                 + b"\x00"))
    client.send_frame(2, 1, struct.pack("!HHQ", 60, 0, len(body)) + properties)
    client.send_frame(3, 1, body)


@pytest.mark.extension
def test_such_a_routing_key_survives_restart_dead_lettering_and_a_compacted_stream(
        own_broker: Any) -> None:
    """The message store, the DLX path and stream records keep the publisher's bytes (the
    store once counted such a record as damaged: a confirmed message lost on restart)."""
    from tests.abuse.bytewire import entry, table

    client = opened(own_broker)
    client.queue_declare("work", durable=True, arguments=table(
        entry("x-dead-letter-exchange", b"S", longstr(b"")),
        entry("x-dead-letter-routing-key", b"S", longstr(b"dead"))))
    client.queue_declare("dead", durable=True)
    client.queue_declare("log", durable=True, arguments=table(
        entry("x-queue-type", b"S", longstr(b"stream")),
        entry("x-cleanup-policy", b"S", longstr(b"compact"))))
    for queue in ("work", "log"):
        client.queue_bind(queue, "amq.topic", "#")
    client.confirm_select()
    publish_raw(client, "amq.topic", b"k.\xff", b"\x10\x00\x02", b"kept")  # persistent
    client.wait_confirms(1)
    client.close()
    own_broker.restart()
    client = opened(own_broker)
    tag, _, body = client.get("work", no_ack=False)
    assert body == b"kept"
    client.reject(tag, requeue=False)
    deadline = time.monotonic() + 10
    dead = None
    while dead is None and time.monotonic() < deadline:
        dead = client.get("dead")
    assert dead is not None and dead[2] == b"kept"
    client.close()


def test_amqplain_login_that_is_not_utf8_is_refused(broker: Any) -> None:
    """AMQPLAIN's response is a field table; a LOGIN that is not UTF-8 names no user."""
    from tests.abuse.bytewire import entry

    client = RawClient(broker.host, broker.port)
    try:
        client.start_ok(mechanism="AMQPLAIN", response=entry("LOGIN", b"S", longstr(b"gu\xffest"))
                        + entry("PASSWORD", b"S", longstr(b"guest")))
        with pytest.raises((ConnectionError, OSError)):
            client.expect(10, 30)  # never tuned: refused, then the socket closes
    finally:
        client.close()
