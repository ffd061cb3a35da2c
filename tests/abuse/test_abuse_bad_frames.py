"""Scripted abuse, broken frames: a publisher dying mid-body and oversized frames (501).

Each test: the abusive client gets RabbitMQ's answer (reply code, or the socket dropped),
the broker does not leak (open file descriptors and RSS of the broker process measured
before/after, with tolerant thresholds, once the broker has noticed the abusive client is
gone), and a normal pika client still works during and afterwards.

The broker runs with ``SMARTBROKER_HANDSHAKE_TIMEOUT=1`` so the half-open test is fast.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import abuse_helpers
import pytest
from abuse_helpers import (
    Probe,
    _get,
    check_pika_works,
    closing_all,
    content_header,
    pika_connect,
    poll,
    raw_client,
    raw_frame,
)
from pamqp import body as pamqp_body
from pamqp import commands, frame

pytestmark = pytest.mark.extension

# the helper module's fixtures, made visible to pytest here (the autouse one gives the
# broker a 1 s handshake timeout)
_fast_handshake_timeout = abuse_helpers._fast_handshake_timeout
probe = abuse_helpers.probe


def test_disconnect_mid_body_never_delivers_partial_message(own_broker: Any, probe: Probe) -> None:
    """A publisher that dies after half of a body: nothing reaches the queue, and the
    broker forgets the connection."""
    queue = f"abuse.midbody.{uuid.uuid4().hex[:8]}"
    admin = pika_connect(own_broker)
    with closing_all([admin]):
        ach = admin.channel()
        ach.queue_declare(queue)
        base_fds = probe.fds()
        for split in (0, 1, 500):  # after header / after 1 body byte / half the body
            client = raw_client(own_broker)
            client.open_channel(1)
            payload = b"p" * 1000
            client.send(frame.marshal(commands.Basic.Publish(routing_key=queue), 1)
                        + frame.marshal(content_header(len(payload)), 1)
                        + (frame.marshal(pamqp_body.ContentBody(payload[:split]), 1) if split else b""))
            # a round trip on another channel: the broker has read the partial publish
            client.send_frame(commands.Channel.Open(), 2)
            client.expect(commands.Channel.OpenOk)
            client.close()
        probe.wait_fds(base_fds)
        assert ach.queue_declare(queue, passive=True).method.message_count == 0
        ach.basic_publish("", queue, b"marker")
        method, _, got = poll(lambda: _get(ach, queue), 5.0, "marker message")
        assert got == b"marker"
        ach.basic_ack(method.delivery_tag)
        assert ach.basic_get(queue)[0] is None
        ach.queue_delete(queue)
    check_pika_works(own_broker)



def test_oversized_frame_is_501(own_broker: Any, probe: Probe) -> None:
    """A frame larger than the negotiated frame_max: connection.close 501 FRAME_ERROR, also
    when only the start of it has arrived; then the socket closes."""
    base_fds = probe.fds()
    for sent in (None, 8):  # the whole frame / header + one payload byte
        client = raw_client(own_broker, frame_max=4096)
        with closing_all([client]):
            client.open_channel(1)
            payload = struct.pack("!HH", 60, 40) + b"\x00" * 5000
            data = raw_frame(1, 1, payload)
            client.send(data[:sent])
            close = client.expect_connection_close(timeout=5)
            assert close.reply_code == 501, close
            assert client.wait_closed(5)
    # a body frame over the limit, inside a publish
    client = raw_client(own_broker, frame_max=4096)
    with closing_all([client]):
        client.open_channel(1)
        client.send(frame.marshal(commands.Basic.Publish(routing_key="nowhere"), 1)
                    + frame.marshal(content_header(10_000), 1)
                    + raw_frame(3, 1, b"b" * 10_000))
        close = client.expect_connection_close(timeout=5)
        assert close.reply_code == 501, close
        assert client.wait_closed(5)
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)


def test_oversized_frame_header_alone_is_501(own_broker: Any) -> None:
    client = raw_client(own_broker, frame_max=4096)
    with closing_all([client]):
        client.open_channel(1)
        client.send(struct.pack("!BHI", 1, 1, 5000))
        close = client.expect_connection_close(timeout=3)
        assert close.reply_code == 501, close
